"""Further pre-training with an exactly frozen region, and the forgetting it causes."""

from langloc.train.freezing import RegionFreezer, optimizer_step
from langloc.train.trainer import FREEZE_MODES, PRECISIONS, TrainResult, forgetting, lr_at, random_region_like, train

__all__ = ["FREEZE_MODES", "PRECISIONS", "RegionFreezer", "TrainResult", "forgetting", "lr_at", "optimizer_step",
           "random_region_like", "train"]
