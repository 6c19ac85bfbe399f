"""The names a user chooses among, and their light constants, in one module without heavy imports:
the command line builds its options from here, so `vprbench --help` imports neither torch nor faiss.
Each is used by the module named beside it, which maps the names to what they mean."""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DTYPE_NAMES = ("fp32", "bf16", "fp16")  # extract._autocast_dtype: autocast dtypes (fp16: CUDA)
BAD_IMAGE_POLICIES = ("error", "skip")  # extract
INTERPOLATION_NAMES = ("bilinear", "bicubic", "nearest")  # datasets.images.INTERPOLATIONS
# Pixel normalisations other than the model card's: (mean, std) after scaling to [0, 1] (extract).
NORMALISATIONS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # to [-1, 1]
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
# Which images share an inference batch of a batch-dependent model: the protocol's official order,
# or a seeded shuffle of each split (extract).
BATCH_ORDERS = ("official", "shuffled")
# Where images are decoded and resized: by PIL in the loader workers, or by torchvision on the
# extraction device (nvJPEG on CUDA), the workers only reading the files (extract).
DECODES = ("pil", "device")
# What decodes with PIL (--decode pil): threads of the extracting process, or spawned processes that
# write into shared memory (vprbench.extract.loader.ProcessDecoders). The pixels are the same.
LOADERS = ("threads", "processes")
RESIZE_STAGES = ("pil", "uint8", "unit", "normalised")  # datasets.resize: where the resize happens
SEARCHES = ("exact", "hnsw", "ivf-flat", "ivf-pq")  # search
STORES = ("fp32", "fp16")  # extract.cache: the precision descriptors are stored in
NO_POSITIVE_POLICIES = ("miss", "exclude")  # metrics
# evaluate --metrics: the robotics metrics (vprbench.evaluate.robotics), each in both conventions
ROBOTICS_METRICS = ("auc-pr", "r@100p", "precision", "map")
DEFAULT_KS = (1, 5, 10, 20)  # evaluate
EXPORT_FORMATS = ("gsv-cities", "vdd")  # datasets.export
SAMPLE_NAME = "nordland-sample"  # datasets.manage: the embedded sample
# How queries are resampled for intervals and paired tests (vprbench.evaluate.clusters, metrics.Resampling).
CLUSTER_HELP = (
    "How queries are resampled for intervals and paired tests: 'protocol' (its datasets.yaml rule), "
    "'iid', 'place' (same coordinates), 'sequence' (MSLS sequences) or 'blocks:L' (moving blocks of L "
    "consecutive queries)."
)
