"""Further pre-training with an exactly frozen region, and the forgetting it causes."""

from langloc.train.freezing import RegionFreezer, optimizer_step
from langloc.train.trainer import (FREEZE_MODES, PRECISIONS, Forgetting, TrainResult, TrainSettings, forgetting, lr_at,
                                   random_region_like, train)

__all__ = ["FREEZE_MODES", "PRECISIONS", "Forgetting", "RegionFreezer", "TrainResult", "TrainSettings", "forgetting", "lr_at", "optimizer_step",
           "random_region_like", "train"]
