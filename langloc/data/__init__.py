from langloc.data.corpora import BIBLE_TRANSLATIONS, BibleCorpus, Corpus, FolderCorpus, HFCorpus
from langloc.data.loading import load_corpus
from langloc.data.packing import corpus_windows, iter_batches, iter_windows, pack_windows

__all__ = ["BIBLE_TRANSLATIONS", "BibleCorpus", "Corpus", "FolderCorpus", "HFCorpus", "load_corpus",
           "corpus_windows", "iter_batches", "iter_windows", "pack_windows"]
