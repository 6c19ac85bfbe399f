"""The released defaults of each stage as the official D2VPR scripts set them, with the sources.

distill   D2VPR parser.py:7-64, distillation.py: 8 places x 4 images, 224x224, Adam 2.5e-5 (its StepLR
          is never stepped: constant), 20 epochs, MSE on descriptors, teacher CricaVPR, student d2vpr
          without the cross-image encoder; in-city batches built once (dataloaders/train/
          GSVCitiesDataset.py, shuffle False) from its 23 cities. The released script keeps the best MSLS-val R@5; vprbench's
          default is R@1 of the first --val for both stages (--best-metric R@5 for the released choice).
finetune  D2VPR finetune.py:64-98, finetune_script.py: 128 places x 4 images, 224x224, AdamW 2e-4 with
          weight decay 1e-3, MultiStepLR [10, 20, 30] x 0.1 per epoch, 120 epochs, 16-bit mixed
          precision, seed 3407, MultiSimilarity loss and miner; warm-up 3,900 (read as iterations here,
          as epochs in the released code: --warmup-as-released); in-city batches re-shuffled every
          epoch (finetune_script.py on_train_epoch_end) over every city.
"""

STAGE_DEFAULTS = {
    "distill": {
        "model": "d2vpr",
        "teacher": "cricavpr",
        "loss": "mse",
        "epochs": 20,
        "places_per_batch": 8,
        "images_per_place": 4,
        "image_size": (224, 224),
        "optimizer": "adam",
        "lr": 2.5e-5,
        "weight_decay": 0.0,
        "best_metric": "R@1",  # the released script picks by MSLS-val R@5: --best-metric R@5
        "batching": "in-city-fixed",  # in-city batches, built once (gsv.BATCHINGS)
    },
    "finetune": {
        "model": "d2vpr",
        "loss": "multisimilarity",
        "epochs": 120,
        "places_per_batch": 128,
        "images_per_place": 4,
        "image_size": (224, 224),
        "optimizer": "adamw",
        "lr": 2e-4,
        "weight_decay": 1e-3,
        "milestones": (10, 20, 30),
        "gamma": 0.1,
        "warmup_steps": 3900,
        "seed": 3407,
        "best_metric": "R@1",
        "batching": "in-city",  # in-city batches, re-shuffled every epoch
    },
}
