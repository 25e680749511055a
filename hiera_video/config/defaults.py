"""Every configuration key of hiera_video, with its default and a one-line comment.

Names follow PySlowFast where it has them, so a PySlowFast user feels at home. Batch sizes are GLOBAL (over all
processes of all machines); the code divides them by the world size.
"""
from __future__ import annotations

from fvcore.common.config import CfgNode

_C = CfgNode()

# ---------------------------------------------------------------------------------------------------------------
# Top level
# ---------------------------------------------------------------------------------------------------------------
# What to optimise: "classification" (Kinetics/SSv2 fine-tuning), "mae" (masked pretraining) or "detection" (AVA).
_C.TASK = "classification"
# Accelerators per machine: 0 runs on the CPU; N > 0 starts N processes per machine, one per CUDA device.
_C.NUM_GPUS = 0
# CPU processes per machine when NUM_GPUS is 0 (gloo); 1 = plain single process.
_C.NUM_CPU_PROCS = 1
# Machines in the job and this machine's index (manual multi-node launches with --init_method).
_C.NUM_SHARDS = 1
_C.SHARD_ID = 0
# Base random seed: each rank and each data worker derives its own seed from it.
_C.RNG_SEED = 0
# Where checkpoints, logs and results go.
_C.OUTPUT_DIR = "./output"
# Iterations between json_stats lines during training.
_C.LOG_PERIOD = 10
# Minutes a collective may wait before the run fails (a dead rank fails the job instead of hanging it).
_C.DIST_TIMEOUT_MINUTES = 30.0

# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------
_C.MODEL = CfgNode()
# Named constructor (see hiera_video.models.list_models()), e.g. hiera_large_16x224 or mae_hiera_large_16x224.
_C.MODEL.ARCH = "hiera_base_16x224"
# Number of classes of the classification / detection head.
_C.MODEL.NUM_CLASSES = 400
# Dropout before the classification head.
_C.MODEL.DROPOUT_RATE = 0.0
# Class names in label order, shown next to class indices in predictions and analyses: a shipped list (kinetics400,
# kinetics600, kinetics700) or a file with one name per line (the classes.txt of `tools/prepare_data.py csv`). Empty:
# the dataset's own names (DATA.PATH_TO_DATA_DIR/classes.txt for Kinetics-format data, the SSv2 labels json, the AVA
# label map) when it has them, else the indices. The list must hold MODEL.NUM_CLASSES names.
_C.MODEL.CLASS_NAMES = ""
# Linear probe: train only the head (a BatchNorm without affine parameters, then the linear layer, as MAE's linear
# probing); the backbone keeps the weights of TRAIN.CHECKPOINT_FILE_PATH (or its random init) and stays in eval mode.
_C.MODEL.FREEZE_BACKBONE = False
# Activation checkpointing: in training, every Hiera block (the backbone's and the MAE decoder's) keeps only its input
# and recomputes its activations in backward (non-reentrant torch.utils.checkpoint). Less memory, about one more
# forward pass per step (benchmarks/memory.py measures both); the gradients are the same.
_C.MODEL.ACT_CHECKPOINT = False

# Overrides of the constructor's hyper-parameters; an empty list / -1 keeps the constructor's value.
_C.HIERA = CfgNode()
_C.HIERA.EMBED_DIM = -1  # channels of the first stage
_C.HIERA.NUM_HEADS = -1  # attention heads of the first stage
_C.HIERA.STAGES = []  # blocks per stage, e.g. [2, 6, 36, 4]
_C.HIERA.Q_POOL = -1  # number of stage transitions that pool the query
_C.HIERA.Q_STRIDE = []  # pooling stride (t, h, w) at each transition
_C.HIERA.MASK_UNIT_SIZE = []  # mask unit in tokens (t, h, w)
_C.HIERA.MASK_UNIT_ATTN = []  # per stage: attention inside mask units (True) or global (False)
_C.HIERA.PATCH_KERNEL = []  # stem convolution kernel (t, h, w)
_C.HIERA.PATCH_STRIDE = []  # stem convolution stride (t, h, w)
_C.HIERA.PATCH_PADDING = []  # stem convolution padding (t, h, w)
_C.HIERA.MLP_RATIO = -1.0  # MLP hidden width / block width
_C.HIERA.DROP_PATH_RATE = 0.0  # stochastic depth at the last block (linear from 0)

# Masked autoencoder pretraining (TASK "mae").
_C.MAE = CfgNode()
# Fraction of mask units hidden from the encoder.
_C.MAE.MASK_RATIO = 0.9
# Reconstruction target: "pixel" (per-patch normalised pixels) or "hog" (MaskFeat-style gradient histograms).
_C.MAE.TARGET = "pixel"
# Decoder width, depth and heads (-1 keeps the constructor's value).
_C.MAE.DECODER_EMBED_DIM = -1
_C.MAE.DECODER_DEPTH = -1
_C.MAE.DECODER_NUM_HEADS = -1

# Exponential moving average (EMA) of the weights, updated after every optimiser step; validation and the test also
# evaluate it (json_stats keys and result files prefixed ema_) and checkpoints keep it (model_ema_state).
_C.MODEL_EMA = CfgNode()
_C.MODEL_EMA.ENABLE = False
# Weight of the average in each update: the average spans about 1 / (1 - DECAY) steps.
_C.MODEL_EMA.DECAY = 0.9999
# Decay warmup: update t uses DECAY * min(1, t / WARMUP_STEPS), so the first update copies the weights and the
# average forgets the starting weights quickly (0: DECAY from the second update on).
_C.MODEL_EMA.WARMUP_STEPS = 2000

# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------
_C.TRAIN = CfgNode()
_C.TRAIN.ENABLE = True
# Dataset name: kinetics, ssv2 or ava.
_C.TRAIN.DATASET = "kinetics"
# Global batch size (all processes together).
_C.TRAIN.BATCH_SIZE = 64
# Epochs between validation passes (0 disables validation).
_C.TRAIN.EVAL_PERIOD = 1
# Epochs between checkpoints; the last epoch is always saved.
_C.TRAIN.CHECKPOINT_PERIOD = 1
# Iterations between mid-epoch checkpoints (0: only at epoch ends and on preemption).
_C.TRAIN.CHECKPOINT_ITER_PERIOD = 0
# Mid-epoch checkpoints to keep (older ones are deleted; epoch checkpoints are always kept).
_C.TRAIN.KEEP_ITER_CHECKPOINTS = 2
# Resume from the newest checkpoint in OUTPUT_DIR/checkpoints when there is one.
_C.TRAIN.AUTO_RESUME = True
# Weights to start from when not resuming: an official Hiera file, an MAE checkpoint, or one of ours; a path or an
# official name MODEL:CHECKPOINT such as mae_hiera_base_16x224:mae_k400 (downloaded once into the torch hub cache).
_C.TRAIN.CHECKPOINT_FILE_PATH = ""
# Start at epoch 0 with a fresh optimizer after loading CHECKPOINT_FILE_PATH (fine-tuning).
_C.TRAIN.CHECKPOINT_EPOCH_RESET = True
# Automatic mixed precision on CUDA (ignored on the CPU).
_C.TRAIN.MIXED_PRECISION = True
# AMP dtype: "bfloat16" or "float16" (float16 uses a gradient scaler).
_C.TRAIN.AMP_DTYPE = "bfloat16"
# Micro-batches accumulated per optimiser step (the global batch is split over them).
_C.TRAIN.ACCUM_ITER = 1
# How several processes share the model: "ddp" (each holds all weights and optimizer state; DistributedDataParallel)
# or "fsdp" (FSDP2: every Hiera block, the MAE decoder blocks and the rest are sharded over the processes, which
# gather a block's weights only while it runs; on CUDA it computes in AMP_DTYPE when MIXED_PRECISION is set).
# Checkpoints of an fsdp run are sharded folders (checkpoints/*.dcp), written by every process in the background;
# tools/consolidate_checkpoint.py turns one into a single .pyth file. A single process trains unsharded.
_C.TRAIN.PARALLELISM = "ddp"
# torch.compile the training model: "" (eager), "default", "reduce-overhead" (adds CUDA graphs on a GPU) or
# "max-autotune" (longer compilation searching faster kernels). Static shapes (dynamic=False), compiled once before
# the DistributedDataParallel wrap; evaluation runs eagerly. Compiling on the CPU needs a C++ compiler (g++).
_C.TRAIN.COMPILE = ""

# ---------------------------------------------------------------------------------------------------------------
# Testing
# ---------------------------------------------------------------------------------------------------------------
_C.TEST = CfgNode()
_C.TEST.ENABLE = True
_C.TEST.DATASET = "kinetics"
# Global number of VIDEOS per validation / test batch; in testing each brings all its views
# (NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS clips), decoded once.
_C.TEST.BATCH_SIZE = 8
# Weights to test (a path or an official name such as hiera_base_16x224:mae_k400_ft_k400); empty: the newest
# checkpoint in OUTPUT_DIR, else TRAIN.CHECKPOINT_FILE_PATH.
_C.TEST.CHECKPOINT_FILE_PATH = ""
# Temporal views per video.
_C.TEST.NUM_ENSEMBLE_VIEWS = 10
# Spatial crops per temporal view (1 = centre, 3 = left/centre/right).
_C.TEST.NUM_SPATIAL_CROPS = 3
# How view scores combine per video: "sum" or "max".
_C.TEST.ENSEMBLE_METHOD = "sum"
# Per-video predictions file, relative to OUTPUT_DIR (empty: test_predictions.csv).
_C.TEST.SAVE_RESULTS_PATH = ""

# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------
_C.DATA = CfgNode()
# Folder holding {train,val,test}.csv (Kinetics format) or the dataset's annotation files.
_C.DATA.PATH_TO_DATA_DIR = ""
# Prefix joined to every video path of the CSV files.
_C.DATA.PATH_PREFIX = ""
# Separator between path and label in the CSV files.
_C.DATA.PATH_LABEL_SEPARATOR = " "
# Write the built-in demo dataset into PATH_TO_DATA_DIR when it holds no CSV files.
_C.DATA.DEMO_DATASET = False
# Seed of the demo videos' rendering (textures, colours, speeds); a folder written with another seed is refused.
_C.DATA.DEMO_SEED = 0
# Weight (< 0.5) of a second demo texture moving along a random one of the eight directions, blended over the one
# whose direction is the class (0 = none). The demo has MODEL.NUM_CLASSES directions (2-8; 5-8 add diagonals).
_C.DATA.DEMO_DISTRACTOR = 0.0
# What moves in the demo videos: "texture" (a random two-colour texture per video) or "plaid" (three gray gratings
# with random phases; the MAE demo's data, where pretraining pays off).
_C.DATA.DEMO_PATTERN = "texture"
# Standard deviation (gray levels, 0-255) of the Gaussian noise added to every pixel of the demo videos (0 = none).
_C.DATA.DEMO_NOISE = 0.0
# Train on this fraction of the training list: a class-balanced subset (at least one video per class) drawn with
# RNG_SEED, for low-label fine-tuning (Kinetics-format lists and SSv2). MAE pretraining usually keeps 1.0: it
# needs no labels.
_C.DATA.TRAIN_FRACTION = 1.0
# Frames per clip and the stride between them (at TARGET_FPS).
_C.DATA.NUM_FRAMES = 16
_C.DATA.SAMPLING_RATE = 4
# Frame rate the sampling rate refers to; videos at other rates are resampled in time.
_C.DATA.TARGET_FPS = 30
# Per-channel normalisation (RGB, in [0, 1] units).
_C.DATA.MEAN = [0.45, 0.45, 0.45]
_C.DATA.STD = [0.225, 0.225, 0.225]
# Short-side jitter range for training (used when TRAIN_JITTER_SCALES_RELATIVE is empty).
_C.DATA.TRAIN_JITTER_SCALES = [256, 320]
# Random-resized-crop area range (relative); empty uses short-side jitter instead.
_C.DATA.TRAIN_JITTER_SCALES_RELATIVE = [0.08, 1.0]
# Random-resized-crop aspect ratio range.
_C.DATA.TRAIN_JITTER_ASPECT_RELATIVE = [0.75, 1.3333]
# Crop size for training (and the model's input size).
_C.DATA.TRAIN_CROP_SIZE = 224
# Crop size for validation and testing (the short side is resized to it).
_C.DATA.TEST_CROP_SIZE = 224
# Random horizontal flip in training.
_C.DATA.RANDOM_FLIP = True
# Decoder of video files: "auto" (torchcodec when it imports and finds FFmpeg's shared libraries, else decord, else
# PyAV; the choice is logged), "torchcodec", "decord" or "pyav". torchcodec and decord fall back to PyAV for files
# they cannot open.
_C.DATA.DECODING_BACKEND = "auto"
# Where torchcodec decodes: "cpu", or "cuda" (NVDEC on the process's GPU, in every data-loader worker; frames are
# copied to host memory; needs DATA.DECODING_BACKEND torchcodec or auto choosing it; see the README's limits).
_C.DATA.DECODE_DEVICE = "cpu"
# Stop with an error when more than this fraction of a split fails to decode.
_C.DATA.MAX_BAD_FRACTION = 0.05
# Native decoder messages (FFmpeg's "moov atom not found", decord's "ERROR opening ...") shown: "quiet" (none; a
# broken file is still named once by our own warning), or "error", "warning", "info", "debug" to debug decoding.
_C.DATA.DECODER_LOG_LEVEL = "quiet"

_C.DATA_LOADER = CfgNode()
# Decoding worker processes per training process.
_C.DATA_LOADER.NUM_WORKERS = 4
# Pinned host memory (only on CUDA).
_C.DATA_LOADER.PIN_MEMORY = True
# How workers start: "auto" (spawn with CUDA, fork otherwise), or "fork", "spawn", "forkserver" to force one.
_C.DATA_LOADER.MP_CONTEXT = "auto"

# ---------------------------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------------------------
_C.AUG = CfgNode()
# RandAugment (same operation on every frame) and random erasing.
_C.AUG.ENABLE = False
_C.AUG.RAND_AUG_NUM_OPS = 2
# Magnitude on timm's 0..10 scale ("rand-m9"); each operation draws it from N(MAGNITUDE, MAGNITUDE_STD) clipped to
# [0, 10] (timm's "mstd"; 0 = always MAGNITUDE).
_C.AUG.RAND_AUG_MAGNITUDE = 9
_C.AUG.RAND_AUG_MAGNITUDE_STD = 0.0
_C.AUG.RE_PROB = 0.25
# Clips drawn from one decoded video per step (repeated sampling); the batch counts videos.
_C.AUG.NUM_SAMPLE = 1
# SSv2: flip and swap the labels of left/right template pairs.
_C.AUG.SSV2_FLIP_SWAP = False

_C.MIXUP = CfgNode()
_C.MIXUP.ENABLE = False
_C.MIXUP.ALPHA = 0.8
_C.MIXUP.CUTMIX_ALPHA = 1.0
# Probability of mixing a batch at all, and of CutMix instead of MixUp.
_C.MIXUP.PROB = 1.0
_C.MIXUP.SWITCH_PROB = 0.5
# Label smoothing of the (mixed) targets; also used without mixup.
_C.MIXUP.LABEL_SMOOTH_VALUE = 0.1

# ---------------------------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------------------------
_C.SOLVER = CfgNode()
# Learning rate for a global batch of BASE_LR_BATCH; scaled linearly to the actual global batch.
_C.SOLVER.BASE_LR = 1e-3
_C.SOLVER.BASE_LR_BATCH = 256
# "cosine" (after a linear warmup) or "constant".
_C.SOLVER.LR_POLICY = "cosine"
_C.SOLVER.COSINE_END_LR = 1e-6
_C.SOLVER.WARMUP_EPOCHS = 5.0
_C.SOLVER.WARMUP_START_LR = 1e-6
_C.SOLVER.MAX_EPOCH = 100
# "adamw" or "sgd".
_C.SOLVER.OPTIMIZING_METHOD = "adamw"
_C.SOLVER.BETAS = [0.9, 0.999]
_C.SOLVER.MOMENTUM = 0.9
# Weight decay (never applied to norms, biases and position embeddings).
_C.SOLVER.WEIGHT_DECAY = 0.05
# Layer-wise learning-rate decay for fine-tuning (1.0 disables it).
_C.SOLVER.LAYER_DECAY = 1.0
# Gradient clipping by global L2 norm (0 disables it).
_C.SOLVER.CLIP_GRAD_L2NORM = 0.0

# ---------------------------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------------------------
_C.TENSORBOARD = CfgNode()
_C.TENSORBOARD.ENABLE = True
# Event-file folder, relative to OUTPUT_DIR.
_C.TENSORBOARD.LOG_DIR = "tensorboard"

# ---------------------------------------------------------------------------------------------------------------
# Something-Something v2
# ---------------------------------------------------------------------------------------------------------------
_C.SSV2 = CfgNode()
# Where the videos are: "videos" (the official release: <id><VIDEO_EXTENSION> files in DATA.PATH_PREFIX) or
# "frames" (PySlowFast frame lists {train,val}.csv in DATA.PATH_TO_DATA_DIR, frame paths under DATA.PATH_PREFIX).
# Either way the label json files are in DATA.PATH_TO_DATA_DIR.
_C.SSV2.LAYOUT = "videos"
# File extension of the videos in the "videos" layout (".webm" as released; ".mp4" for re-encoded copies).
_C.SSV2.VIDEO_EXTENSION = ".webm"

# ---------------------------------------------------------------------------------------------------------------
# AVA action detection
# ---------------------------------------------------------------------------------------------------------------
_C.AVA = CfgNode()
# Video source, one of two layouts (set exactly one of FRAME_DIR and VIDEO_DIR):
# frames: FRAME_DIR/<video>/<video>_%06d.jpg listed by FRAME_LIST_DIR/{TRAIN,TEST}_LISTS (PySlowFast layout);
# videos: VIDEO_DIR/<video>.<any extension>, one file per video id, decoded around each keyframe directly.
_C.AVA.FRAME_DIR = ""
_C.AVA.FRAME_LIST_DIR = ""
_C.AVA.TRAIN_LISTS = ["train.csv"]
_C.AVA.TEST_LISTS = ["val.csv"]
_C.AVA.VIDEO_DIR = ""
# The second at which frame 0 of a video (or frame folder) is shown: 900 for the standard 15-minute cuts (AVA
# timestamps count from the start of the movie, keyframes 902..1798), 0 for uncut movies.
_C.AVA.FIRST_SECOND = 900
# First and last keyframe second (inclusive) of the box lists and the evaluated ground truth: [902, 1798] in AVA
# v2.x; custom AVA-format datasets set theirs. Rows outside are left out and counted in one warning per file.
_C.AVA.KEYFRAME_RANGE = [902, 1798]
# Frame rate of the frame folders (the standard extraction uses 30 fps); video files report their own.
_C.AVA.FRAME_RATE = 30
# Folder of the annotation files below (all names are relative to it).
_C.AVA.ANNOTATION_DIR = ""
# Ground-truth boxes for training (video,second,x1,y1,x2,y2,action,person_id).
_C.AVA.TRAIN_GT_BOX_LISTS = ["ava_train_v2.2.csv"]
# Detected person boxes added in training (video,second,x1,y1,x2,y2,action or empty,score).
_C.AVA.TRAIN_PREDICT_BOX_LISTS = []
# Detected person boxes scored in validation and testing.
_C.AVA.TEST_PREDICT_BOX_LISTS = ["person_box_67091280_iou90/ava_detection_val_boxes_and_labels.csv"]
# Detected boxes with a lower score are ignored.
_C.AVA.DETECTION_SCORE_THRESH = 0.9
# Label map of the evaluated classes (60 of the 80 in AVA v2.2).
_C.AVA.LABEL_MAP_FILE = "ava_action_list_v2.2_for_activitynet_2019.pbtxt"
# A label map (same pbtxt format) of the classes to train and evaluate, instead of all MODEL.NUM_CLASSES (which must
# then be its number of classes) and LABEL_MAP_FILE's; empty: all. Rows of other classes are left out and counted,
# their boxes kept as persons doing none of the subset's actions; detections keep the original class ids.
_C.AVA.CLASS_SUBSET = ""
# Keyframes left out of the evaluation (video,second); empty for none.
_C.AVA.EXCLUSION_FILE = "ava_val_excluded_timestamps_v2.2.csv"
# Ground truth the detections are scored against.
_C.AVA.GROUNDTRUTH_FILE = "ava_val_v2.2.csv"
# Validate on every keyframe instead of every 4th second (the test always uses every keyframe).
_C.AVA.FULL_TEST_ON_VAL = False
# Backbone stage whose feature map the ROI head pools (-1: the last, as in the Hiera paper); later stages are dropped.
_C.AVA.HEAD_STAGE = -1
# RoIAlign output size (per side) before the spatial max-pool.
_C.AVA.ROI_RESOLUTION = 7
# Training boxes: each edge moves by up to this fraction of the box's width / height (0 disables).
_C.AVA.BOX_JITTER = 0.0


def get_defaults() -> CfgNode:
    """A fresh copy of the default configuration."""
    return _C.clone()
