"""Training data: an index of HR/LR pairs (plain folders, the DIV2K and LSDIR layouts,
prepared sub-image folders, LMDBs), decoded lazily in DataLoader workers, drawn as random
aligned patches with flips and 90° rotations; every batch is a pure function of
(seed, step, rank).

Modules: discovery (where the images are), training_set (index + lazy bounded decoding),
bicubic (exact MATLAB-bicubic LR crops), batches (PatchBatches), schedule (patch-size
schedules), lmdb_store (BasicSR-layout LMDBs), teacher_store (a teacher's outputs of the
training images, read with the patches); `python -m utils.data.prepare` writes
sub-images and LMDBs, `python -m utils.data.benchmark` measures the loader.
"""
from utils.data.batches import PatchBatches, augment, draw_patch
from utils.data.bicubic import bicubic_crop
from utils.data.discovery import default_training_dirs, find_training_pairs, validation_set
from utils.data.schedule import parse_patch_schedule, patch_size_at, stage_at
from utils.data.training_set import TrainingSet, UnreadableImage

__all__ = ['PatchBatches', 'TrainingSet', 'UnreadableImage', 'augment', 'bicubic_crop', 'default_training_dirs',
           'draw_patch', 'find_training_pairs', 'parse_patch_schedule', 'patch_size_at', 'stage_at', 'validation_set']
