"""Built-in prompt sets: short, neutral openings written for langloc (no copyrighted text).

Sets in en, fr, es, de, zh, ru and ja are steering sources; those in ar, hi, vi and id
(the same openings, translated) serve as native prompts for the strict judge's perplexity
reference in those targets (and can be sources too). Each set is split once and for all: the first ``TUNE_COUNT`` prompts are the tuning part
(strength search), the rest the held-out evaluation part, so a reported steering rate is
never measured on the prompts its setting was chosen on.
"""

from __future__ import annotations

from pathlib import Path

from langloc.errors import LanglocError

TUNE_COUNT = 12

PROMPTS: dict[str, list[str]] = {
    "en": [
        # tuning part (12)
        "The weather today is", "My favourite place in the city is", "Yesterday I went to",
        "The best way to learn is", "Once upon a time, there was", "In the morning, I usually",
        "The old house at the end of the street", "When I was a child, I", "The most important thing in life is",
        "Last summer we travelled to", "My grandmother always said that", "The train was late because",
        # evaluation part (36)
        "The river flows through", "Every evening after dinner, we", "The market was full of",
        "I opened the window and saw", "Our teacher told us that", "The recipe needs three things:",
        "On the first day of school,", "The doctor said that I should", "At the top of the mountain,",
        "The children were playing in", "My brother works as", "The library closes at",
        "In the small village there lived", "She picked up the phone and said", "The best food I have ever eaten",
        "Every year in spring, the farmers", "The bus stopped in front of", "He wrote a letter to his friend about",
        "The museum has a famous collection of", "After the rain stopped, we", "My neighbour has a dog that",
        "The story begins in a town where", "We should protect the forests because", "The new bridge connects",
        "During the holidays, families often", "The shop on the corner sells", "The sun was setting over",
        "Learning a new language helps you", "The meeting will start when", "My favourite book is about",
        "The cat jumped onto the table and", "Tomorrow I am going to", "The garden behind our house",
        "Good friends are people who", "The city was quiet at night, and", "The first thing I do at work is",
    ],
    "fr": [
        "Le temps aujourd'hui est", "Mon endroit préféré dans la ville est", "Hier, je suis allé à",
        "La meilleure façon d'apprendre est", "Il était une fois", "Le matin, je",
        "La vieille maison au bout de la rue", "Quand j'étais enfant, je", "La chose la plus importante dans la vie est",
        "L'été dernier, nous avons voyagé à", "Ma grand-mère disait toujours que", "Le train était en retard parce que",
        "La rivière traverse", "Chaque soir après le dîner, nous", "Le marché était plein de",
        "J'ai ouvert la fenêtre et j'ai vu", "Notre professeur nous a dit que", "Le premier jour d'école,",
    ],
    "es": [
        "El tiempo hoy está", "Mi lugar favorito de la ciudad es", "Ayer fui a",
        "La mejor manera de aprender es", "Había una vez", "Por la mañana, normalmente",
        "La casa vieja al final de la calle", "Cuando era niño,", "Lo más importante en la vida es",
        "El verano pasado viajamos a", "Mi abuela siempre decía que", "El tren llegó tarde porque",
        "El río pasa por", "Cada noche después de cenar,", "El mercado estaba lleno de",
        "Abrí la ventana y vi", "Nuestro profesor nos dijo que", "El primer día de clase,",
    ],
    "de": [
        "Das Wetter heute ist", "Mein Lieblingsort in der Stadt ist", "Gestern bin ich nach",
        "Der beste Weg zu lernen ist", "Es war einmal", "Am Morgen mache ich normalerweise",
        "Das alte Haus am Ende der Straße", "Als ich ein Kind war,", "Das Wichtigste im Leben ist",
        "Letzten Sommer sind wir nach", "Meine Großmutter sagte immer, dass", "Der Zug hatte Verspätung, weil",
        "Der Fluss fließt durch", "Jeden Abend nach dem Essen", "Der Markt war voller",
        "Ich öffnete das Fenster und sah", "Unser Lehrer sagte uns, dass", "Am ersten Schultag",
    ],
    "zh": [
        "今天的天气", "我在城市里最喜欢的地方是", "昨天我去了", "学习最好的方法是", "从前，有一个",
        "早上我通常", "街道尽头的那座老房子", "我小时候", "人生中最重要的事情是", "去年夏天我们去了",
        "我的奶奶总是说", "火车晚点了，因为", "这条河流经", "每天晚饭后，我们", "市场里到处都是",
        "我打开窗户，看到", "老师告诉我们", "开学的第一天，",
    ],
    "ru": [
        "Погода сегодня", "Моё любимое место в городе —", "Вчера я ходил в", "Лучший способ учиться —",
        "Жил-был однажды", "По утрам я обычно", "Старый дом в конце улицы", "Когда я был ребёнком, я",
        "Самое важное в жизни —", "Прошлым летом мы ездили в", "Моя бабушка всегда говорила, что",
        "Поезд опоздал, потому что", "Река течёт через", "Каждый вечер после ужина мы",
        "Рынок был полон", "Я открыл окно и увидел", "Наш учитель сказал нам, что", "В первый день школы",
    ],
    "ja": [
        "今日の天気は", "町で一番好きな場所は", "昨日、私は", "一番いい勉強の方法は", "昔々、あるところに",
        "朝はいつも", "通りの端にある古い家は", "子どもの頃、私は", "人生で一番大切なことは", "去年の夏、私たちは",
        "祖母はいつも", "電車が遅れたのは", "この川は", "毎晩夕食の後、私たちは", "市場には",
        "窓を開けると", "先生は私たちに", "学校の初日に",
    ],
    "ar": [
        "الطقس اليوم", "مكاني المفضل في المدينة هو", "ذهبت أمس إلى", "أفضل طريقة للتعلم هي", "كان يا ما كان",
        "في الصباح، عادةً", "البيت القديم في آخر الشارع", "عندما كنت طفلاً،", "أهم شيء في الحياة هو",
        "في الصيف الماضي سافرنا إلى", "كانت جدتي تقول دائماً إن", "تأخر القطار لأن", "يمر النهر عبر",
        "كل مساء بعد العشاء،", "كان السوق مليئاً", "فتحت النافذة ورأيت", "قال لنا المعلم إن", "في أول يوم في المدرسة،",
    ],
    "hi": [
        "आज का मौसम", "शहर में मेरी पसंदीदा जगह", "कल मैं गया था", "सीखने का सबसे अच्छा तरीका है", "एक समय की बात है,",
        "सुबह मैं आमतौर पर", "गली के आखिर में पुराना घर", "जब मैं बच्चा था, तब मैं", "जीवन में सबसे ज़रूरी चीज़ है",
        "पिछली गर्मियों में हम गए थे", "मेरी दादी हमेशा कहती थीं कि", "ट्रेन देर से आई क्योंकि", "नदी बहती है",
        "हर शाम खाने के बाद हम", "बाज़ार भरा हुआ था", "मैंने खिड़की खोली और देखा", "हमारे शिक्षक ने हमें बताया कि",
        "स्कूल के पहले दिन",
    ],
    "vi": [
        "Thời tiết hôm nay", "Nơi tôi thích nhất trong thành phố là", "Hôm qua tôi đã đi", "Cách học tốt nhất là",
        "Ngày xửa ngày xưa, có", "Buổi sáng, tôi thường", "Ngôi nhà cũ ở cuối phố", "Khi còn nhỏ, tôi",
        "Điều quan trọng nhất trong cuộc sống là", "Mùa hè năm ngoái chúng tôi đã đi", "Bà tôi luôn nói rằng",
        "Tàu đến muộn vì", "Con sông chảy qua", "Mỗi tối sau bữa ăn, chúng tôi", "Chợ đầy", "Tôi mở cửa sổ và thấy",
        "Thầy giáo nói với chúng tôi rằng", "Vào ngày đầu tiên đi học,",
    ],
    "id": [
        "Cuaca hari ini", "Tempat favorit saya di kota adalah", "Kemarin saya pergi ke", "Cara terbaik untuk belajar adalah",
        "Pada suatu hari, ada", "Di pagi hari, saya biasanya", "Rumah tua di ujung jalan", "Ketika saya masih kecil, saya",
        "Hal yang paling penting dalam hidup adalah", "Musim panas lalu kami pergi ke", "Nenek saya selalu berkata bahwa",
        "Kereta terlambat karena", "Sungai itu mengalir melalui", "Setiap malam setelah makan, kami", "Pasar itu penuh dengan",
        "Saya membuka jendela dan melihat", "Guru kami berkata bahwa", "Pada hari pertama sekolah,",
    ],
}


def builtin_prompts(lang: str, part: str = "eval") -> list[str]:
    """The built-in prompts in ``lang``: ``part`` is ``tune``, ``eval`` or ``all``."""
    if lang not in PROMPTS:
        raise LanglocError(f"no built-in prompts in {lang!r}; built-in: {', '.join(PROMPTS)} (or give a file)")
    if part not in ("tune", "eval", "all"):
        raise LanglocError(f"prompt part must be tune, eval or all, got {part!r}")
    p = PROMPTS[lang]
    return p[:TUNE_COUNT] if part == "tune" else p[TUNE_COUNT:] if part == "eval" else list(p)


def load_prompts(spec: str, part: str = "eval") -> list[str]:
    """``builtin:<lang>`` or a text file with one prompt per line (``part`` applies to built-ins;
    a file is used whole)."""
    if spec.startswith("builtin:"):
        return builtin_prompts(spec.split(":", 1)[1], part)
    path = Path(spec)
    if not path.is_file():
        raise LanglocError(f"prompt file not found: {spec} (or use builtin:<lang>, e.g. builtin:en)")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise LanglocError(f"prompt file {spec} is not UTF-8 text") from None
    prompts = [ln for ln in lines if ln]
    if not prompts:
        raise LanglocError(f"prompt file {spec} has no prompts")
    return prompts
