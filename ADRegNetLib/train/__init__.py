"""Training of AD-RegNet on synthetic pairs (torch + numpy; SimpleITK only in ``prep`` and ``case_check``).

Modules: ``prep`` (real sources -> ``.npz`` volumes), ``synthetic`` (torch building blocks of pairs:
``random_svf``, ``integrate_svf``, ``warp``, ``random_intensity_change``, ``synth_image_from_labels``,
``random_label_map``; plus the numpy pair API of ``pairs``), ``sampler`` (prepared volumes and the
batched pair sampler), ``trainer`` (loss, loop, checkpoints, DistributedDataParallel), ``cli``
(``adregnet train``; ``torchrun -m ADRegNetLib.train.cli``), ``evaluate`` (held-out table),
``ablations`` (equal-budget retraining), ``profile_step``, ``export``, ``case_check``.
"""
