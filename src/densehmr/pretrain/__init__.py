"""Backbone pretraining on the synthetic benchmark's train split: the project's own pretrained start.

A method-neutral objective (none of the four methods' heads) trains the backbone with throw-away heads:
coarse body-part segmentation and person mask (dense, 15 classes), COCO-17 keypoint heatmaps, the template-mesh
coordinates of the surface at the annotated DensePose points, and root-relative 3D joints. Only the backbone
is kept (`python -m densehmr.pretrain`, `make pretrain`); methods load it with `backbone.pretrained=synthetic`.
"""
