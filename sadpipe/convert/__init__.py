"""Converters between sadpipe checkpoints and other frameworks' model files, kept together
(as detectron2 keeps its own in ``checkpoint/c2_model_loading.py``): torchvision's COCO
RetinaNet (:mod:`.torchvision_import`), the SAD release's Detectron/Caffe2 pickles, both
ways (:mod:`.detectron_import`, read safely by :mod:`.detectron_pickle`). They sit above
:mod:`sadpipe.modeling` and :mod:`sadpipe.checkpoint` and import both."""
