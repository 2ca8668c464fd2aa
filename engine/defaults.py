"""Every config key with its default and one comment saying what it means.

Every key of the original ``config.py`` exists here with the original default (except ``MODEL.TYPE``, whose
default ``focal`` named no model), so the published yaml files load unchanged. How keys behave differently
from the original (keys it declared but never read, new keys) is README's "Differences from the original".
Allowed values are checked in ``engine/config.py`` against the lists of the components that use them.
To add a key: add it here with its comment, read it where it acts, and list its choices there if any.
"""
from __future__ import annotations

from yacs.config import CfgNode as CN

_C = CN()

# yaml files merged before the file that lists them (paths relative to that file's folder)
_C.BASE = ['']

# -----------------------------------------------------------------------------
# Data
# -----------------------------------------------------------------------------
_C.DATA = CN()
_C.DATA.ROOT = '/PATH/TO/videos'          # joined in front of every annotation path ('' = use paths as-is)
_C.DATA.TRAIN_FILE = '/PATH/TO/train.txt'  # training annotations: 'path label' or 'path,label' lines
_C.DATA.VAL_FILE = '/PATH/TO/val.txt'     # validation / test annotations (all that --eval reads)
_C.DATA.TEST_FILE = ''                    # held-out list for the final test of best.pth ('' = VAL_FILE)
_C.DATA.NUM_FRAMES = 32                   # frames per clip (T)
_C.DATA.NUM_CLASSES = 101                 # number of classes; must equal MODEL.NUM_CLASSES
_C.DATA.LABEL_LIST = 'labels/ucf_101_labels.csv'   # 'id,name' csv naming the classes in predictions and reports
_C.DATA.BATCH_SIZE = 128                  # training clips per process
_C.DATA.DATA_PATH = ''                    # unused (kept so that the original's files load)
_C.DATA.DATASET = 'imagenet'              # dataset name, used in the output path; 'toy' generates the toy data
_C.DATA.IMG_SIZE = 224                    # model input size
_C.DATA.INPUT_SIZE = 224                  # crop size of the data pipeline
_C.DATA.INTERPOLATION = 'bicubic'         # unused: resizes are bilinear, as in the original
_C.DATA.ZIP_MODE = False                  # unused
_C.DATA.CACHE_MODE = 'part'               # unused
_C.DATA.PIN_MEMORY = True                 # page-locked host memory for the loaders
_C.DATA.NUM_WORKERS = 8                   # loader worker processes per process
_C.DATA.DECODER = 'auto'                  # video decoder: auto (decord if importable, else PyAV) | decord | pyav
# frame sampling: segment (T segments, one frame each, TSN-style) | dense (T frames at stride AUG.FRAME_INTERVAL)
_C.DATA.SAMPLING = 'segment'
# training stops with a summary once more than this fraction of an epoch's videos was unreadable
_C.DATA.MAX_UNREADABLE_FRACTION = 0.01

# -----------------------------------------------------------------------------
# Model
# -----------------------------------------------------------------------------
_C.MODEL = CN()
# model family: videofocalnet or video_focalnet, optionally with _tiny|_small|_base (width and depth are
# MODEL.FOCAL.EMBED_DIM / DEPTHS; a size name that disagrees with them is logged)
_C.MODEL.TYPE = 'videofocalnet'
_C.MODEL.NAME = ''                        # run name, used in logs and the output path
_C.MODEL.RESUME = ''                      # checkpoint to evaluate (--eval) or to resume training from
_C.MODEL.NUM_CLASSES = 1000               # width of the classifier
_C.MODEL.DROP_RATE = 0.0                  # dropout after the stem, in the MLPs and after the modulation projection
_C.MODEL.HEAD_DROP_RATE = 0.0             # dropout before the classifier
_C.MODEL.DROP_PATH_RATE = 0.1             # stochastic depth, rising linearly to this rate over the blocks
_C.MODEL.LABEL_SMOOTHING = 0.1            # label smoothing of the loss when mixup/cutmix are off
_C.MODEL.PRETRAINED = False               # unused: initial weights come from TRAIN.PRETRAINED_PATH
_C.MODEL.TUBELET_SIZE = 1                 # frames per patch of the stem (DATA.NUM_FRAMES must be a multiple)
# initialisation of the Linear layers: original (trunc-normal std 0.02) | xavier (xavier-uniform, zero bias;
# tiny models trained from scratch, e.g. the toy config, learn far faster with it)
_C.MODEL.INIT = 'original'
_C.MODEL.DROP_PATH_MODE = 'video'         # stochastic-depth mask: video (one draw per clip) | frame (per frame)
_C.MODEL.SPEC = CN(new_allowed=True)      # unused

_C.MODEL.FOCAL = CN()
_C.MODEL.FOCAL.PATCH_SIZE = 4             # spatial patch size of the stem
_C.MODEL.FOCAL.IN_CHANS = 3               # input channels
_C.MODEL.FOCAL.EMBED_DIM = 96             # width of the first stage (doubled per stage)
_C.MODEL.FOCAL.DEPTHS = [2, 2, 6, 2]      # blocks per stage
_C.MODEL.FOCAL.MLP_RATIO = 4.0            # MLP hidden width / block width
_C.MODEL.FOCAL.PATCH_NORM = True          # LayerNorm after each patch embedding
_C.MODEL.FOCAL.FOCAL_FACTORS = [2, 2, 2, 2]   # per stage: kernel of level l = FOCAL_FACTOR * l + FOCAL_WINDOW
_C.MODEL.FOCAL.FOCAL_LEVELS = [2, 2, 2, 2]    # per stage: focal levels L of the modulation
_C.MODEL.FOCAL.FOCAL_WINDOWS = [3, 3, 3, 3]   # per stage: kernel size of the first level
_C.MODEL.FOCAL.USE_CONV_EMBED = False     # overlapping convolutional patch embeddings instead of strided patches
_C.MODEL.FOCAL.USE_LAYERSCALE = False     # learnable per-channel scale on each residual branch
_C.MODEL.FOCAL.USE_POSTLN = False         # LayerNorm after (not before) each residual branch
_C.MODEL.FOCAL.USE_POSTLN_IN_MODULATION = False   # LayerNorm on the modulation's output before its projection
_C.MODEL.FOCAL.NORMALIZE_MODULATOR = False        # divide the aggregated context by L + 1
_C.MODEL.FOCAL.LAYERSCALE_VALUE = 1e-4    # initial value of the layerscale
_C.MODEL.FOCAL.DESIGN = 'parallel'        # focal-modulation design: parallel (released), spatial, factorized, divided, joint

# -----------------------------------------------------------------------------
# Training
# -----------------------------------------------------------------------------
_C.TRAIN = CN()
_C.TRAIN.START_EPOCH = 0                  # unused: the start epoch comes from the checkpoint resumed
_C.TRAIN.EPOCHS = 300                     # training epochs
_C.TRAIN.WARMUP_EPOCHS = 20               # epochs of linear warm-up from WARMUP_LR to BASE_LR
_C.TRAIN.WEIGHT_DECAY = 0.05              # decoupled weight decay of weights (not of 1-D params and biases)
_C.TRAIN.BASE_LR = 5e-4                   # peak learning rate (for a total batch of 512 when LR_SCALING)
_C.TRAIN.WARMUP_LR = 5e-7                 # learning rate at the start of warm-up
_C.TRAIN.MIN_LR = 5e-6                    # learning rate at the end of the schedule
_C.TRAIN.CLIP_GRAD = 5.0                  # max gradient norm per optimizer update; 0 or None: no clipping
_C.TRAIN.AUTO_RESUME = True               # resume from OUTPUT/last.pth; never overrides --resume, never in --eval
# start from epoch 0 in an OUTPUT holding an earlier run's checkpoints with nothing to resume: they move to
# OUTPUT/previous-<time>/ (without it such a start is refused, so best.pth is never replaced by accident)
_C.TRAIN.ALLOW_START_OVER = False
_C.TRAIN.ACCUMULATION_STEPS = 0           # micro-batches per optimizer update (0 and 1: one)
_C.TRAIN.GLOBAL_BATCH_SIZE = 0            # clips per optimizer update of the recipe (0: BATCH_SIZE x processes x
                                          # ACCUMULATION_STEPS); set, the accumulation steps are derived from it
_C.TRAIN.LAYOUT_FREE_RANDOMNESS = True    # step randomness keyed by (SEED, epoch, micro-batch): False = per process
_C.TRAIN.USE_CHECKPOINT = False           # gradient checkpointing of every block (saves memory, costs time)
# keep only conv/matmul outputs for backward and recompute element-wise ops (same results, less activation
# memory); ignored when USE_CHECKPOINT recomputes whole blocks
_C.TRAIN.SELECTIVE_CHECKPOINT = True
_C.TRAIN.PRETRAINED_PATH = ''             # initial weights: ImageNet FocalNet-SRF (microsoft or timm) or a video run
# head from a video PRETRAINED_PATH: auto (kept when it has the model's number of classes) | new (always re-drawn:
# fine-tuning on other classes)
_C.TRAIN.PRETRAINED_HEAD = 'auto'
_C.TRAIN.LR_SCALING = True                # scale BASE_LR/WARMUP_LR/MIN_LR by total batch / 512 (x ACCUMULATION_STEPS)
_C.TRAIN.AMP = 'none'                     # mixed precision: none | fp16 (autocast + GradScaler) | bf16
_C.TRAIN.COMPILE = False                  # torch.compile the model
_C.TRAIN.EMA = False                      # keep an exponential moving average of the weights
_C.TRAIN.EMA_DECAY = 0.9998               # weight of the old average per update
_C.TRAIN.EMA_EVAL = True                  # also validate the EMA weights each epoch
_C.TRAIN.DETERMINISTIC = False            # deterministic algorithms, cudnn.benchmark off
_C.TRAIN.FINAL_TEST = True                # after training, test best.pth with TEST.FINAL_NUM_CLIP x FINAL_NUM_CROP

_C.TRAIN.LR_SCHEDULER = CN()
_C.TRAIN.LR_SCHEDULER.NAME = 'cosine'     # schedule after warm-up: cosine | linear | step
_C.TRAIN.LR_SCHEDULER.DECAY_EPOCHS = 30   # step: epochs between decays
_C.TRAIN.LR_SCHEDULER.DECAY_RATE = 0.1    # step: factor per decay
# True reproduces timm 0.5.4 (cosine counted from step 0, so the LR jumps down when warm-up ends); False
# starts the cosine at the end of warm-up, so the LR is continuous
_C.TRAIN.LR_SCHEDULER.LEGACY_COSINE = False

_C.TRAIN.OPTIMIZER = CN()
_C.TRAIN.OPTIMIZER.NAME = 'adamw'         # adamw | sgd
_C.TRAIN.OPTIMIZER.EPS = 1e-8             # AdamW epsilon
_C.TRAIN.OPTIMIZER.BETAS = (0.9, 0.999)   # AdamW betas
_C.TRAIN.OPTIMIZER.MOMENTUM = 0.9         # SGD momentum
_C.TRAIN.OPTIMIZER.NESTEROV = True        # SGD: Nesterov momentum

# -----------------------------------------------------------------------------
# Augmentation
# -----------------------------------------------------------------------------
_C.AUG = CN()
_C.AUG.COLOR_JITTER = 0.4                 # probability of applying colour jitter to a clip
_C.AUG.COLOR_JITTER_PER_FRAME = False     # draw the jitter for every frame instead of once per clip
_C.AUG.AUTO_AUGMENT = 'rand-m9-mstd0.5-inc1'   # RandAugment in timm's syntax, same ops on every frame; 'none' = off
_C.AUG.REPROB = 0.25                      # random erasing probability (0 = off)
_C.AUG.REMODE = 'pixel'                   # random erasing fill: const | rand | pixel
_C.AUG.RECOUNT = 1                        # random erasing: at most this many boxes per clip
_C.AUG.MIXUP = 0.8                        # mixup alpha (0 = off)
_C.AUG.CUTMIX = 1.0                       # cutmix alpha (0 = off)
_C.AUG.CUTMIX_MINMAX = None               # cutmix box size range [min, max] as fractions of the image (overrides alpha)
_C.AUG.MIXUP_PROB = 1.0                   # probability of mixing a batch
_C.AUG.MIXUP_SWITCH_PROB = 0.5            # probability of cutmix instead of mixup when both are on
_C.AUG.MIXUP_MODE = 'batch'               # one draw per: batch | pair | elem
_C.AUG.GRAY_SCALE = 0.2                   # probability of converting a clip to grey
_C.AUG.FLIP_RATIO = 0.5                   # probability of a horizontal flip
_C.AUG.FRAME_INTERVAL = 2                 # segment sampling: frames reserved at the end; dense: the stride
_C.AUG.LABEL_SMOOTH = 0.1                 # smoothing of mixup/cutmix targets
_C.AUG.REPEATED_AUG = 1                   # augmented views per decoded video in training

# -----------------------------------------------------------------------------
# Testing
# -----------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.CROP = True                       # unused
_C.TEST.NUM_CLIP = 1                      # clips per video in validation and --eval
_C.TEST.NUM_CROP = 1                      # crops per clip: 1 (centre) or 3 (along the long side)
_C.TEST.ONLY_TEST = False                 # unused
_C.TEST.BATCH_SIZE = 2                    # videos per evaluation batch (all their views go through at once)
_C.TEST.RANDOM_CLIPS = False              # draw the test clips at random instead of at fixed offsets
_C.TEST.ON_UNREADABLE = 'skip'            # an unreadable test video: skip (reported by path and count) | error
_C.TEST.SCORE_AGG = 'softmax'             # video score: softmax (sum of per-view probabilities) | logits (mean)
_C.TEST.FINAL_NUM_CLIP = 4                # clips per video in the final test after training
_C.TEST.FINAL_NUM_CROP = 3                # crops per clip in the final test

# -----------------------------------------------------------------------------
# Run
# -----------------------------------------------------------------------------
_C.AMP_OPT_LEVEL = ''                     # apex level O0 | O1 | O2, mapped onto TRAIN.AMP ('' = use TRAIN.AMP)
_C.OUTPUT = 'output'                      # output root; the run goes to OUTPUT/<DATA.DATASET>/<MODEL.NAME>/<TAG>
_C.TAG = 'default'                        # last folder of the output path ('default' = derived from LR, epochs ...)
_C.SAVE_FREQ = 1                          # ckpt_epoch_N.pth every SAVE_FREQ epochs (and at the last)
_C.PRINT_FREQ = 100                       # a log line every PRINT_FREQ optimizer updates
_C.PROGRESS_BAR = True                    # training progress bar with rate and ETA (rank 0; only when stdout is a terminal)
_C.SEED = 0                               # random seed (each rank uses SEED + rank)
# CPU runs: compute threads of each training process (0 = the CPUs it may use, shared between the node's
# processes, less one per loader worker; OMP_NUM_THREADS in the environment also chooses)
_C.CPU_THREADS = 0
_C.EVAL_MODE = False                      # set by --eval: only evaluate MODEL.RESUME on DATA.VAL_FILE
_C.THROUGHPUT_MODE = False                # set by --throughput: measure clips/s and exit
_C.DEBUG_MODE = False                     # unused
_C.LOCAL_RANK = 0                         # set from --local_rank or LOCAL_RANK
_C.TENSORBOARD = True                     # write TensorBoard scalars to OUTPUT/tensorboard
_C.DIST_TIMEOUT_MIN = 10.0                # after start-up, minutes a process waits in a collective for the others before the run stops (a lost peer)


def get_default_config() -> CN:
    """A fresh, mutable copy of the defaults."""
    return _C.clone()
