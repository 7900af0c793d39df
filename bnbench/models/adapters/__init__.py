"""Networks people already have: a Flax NNX or Linen model, an Equinox model or a Keras model with its own norm layers,
run under bnbench with every ``BatchNorm``, ``GroupNorm`` and ``LayerNorm`` swapped for a bnbench norm site.

A plugin function (:mod:`bnbench.models.plugin`) returns the adapted network::

    from bnbench.models import adapters

    def net(ctx, *, width: int = 64):                     # Flax NNX: make(rngs) -> nnx.Module
        return adapters.nnx(lambda rngs: MyNet(ctx.input_shape, width, ctx.num_classes, rngs=rngs))

    def net(ctx, *, width: int = 64):                     # Flax Linen: an nn.Module, initialized on one input
        return adapters.linen(MyNet(width, ctx.num_classes), ctx.input_shape)

    def net(ctx, *, width: int = 64):                     # Equinox: make(key) -> eqx.Module
        return adapters.equinox(lambda key: MyNet(width, ctx.num_classes, key=key))

    def net(ctx, *, width: int = 64):                     # Keras 3: make() -> a built keras.Model
        return adapters.keras(lambda: my_model(ctx.input_shape, width, ctx.num_classes))

Each site sits where the model's own norm layer was, as a bare site (``norm(h)``): the model's code
fixes the placement, so a spec cannot sweep ``placement``; everything else sweeps (``norm`` and BN's
variants, ``epsilon`` and ``momentum``, noisy BN, dropout before the norm layer, ``eval_stats``). An NNX
or Linen model is called on the batch, channels last as Flax's layers are (a Linen layer's other feature
axis moved last for its site); an Equinox model, written for one example (channels first) as
Equinox's are, is vmapped over the batch (``axis_name="batch"``) and handed each example channels
first (an ``(H, W, C)`` image as ``(C, H, W)``; a 1-D example as it is), its sites taking their
statistics across that axis, over the example's first axis. What the
frameworks' own layers do differently is in ``docs/plugins.md``. Flax and Equinox are optional extras
(``pip install 'bnbench[flax]'``, ``'bnbench[equinox]'``).

A Keras model (:func:`keras`, on the JAX backend, which bnbench selects) is called on the batch through
Keras's stateless API. In a Sequential or functional model, a norm layer right after a layer with a
fused ``activation`` becomes ``norm.act(h, activation)``, so ``placement`` sweeps over it and
``placement = "post"`` is the model as written; a subclassed model's placement is fixed, as above.
A softmax on the output is taken off (bnbench trains on logits). Extra: ``'bnbench[keras]'``.
"""

from bnbench.models.adapters.from_equinox import equinox
from bnbench.models.adapters.from_keras import keras
from bnbench.models.adapters.from_linen import linen
from bnbench.models.adapters.from_nnx import nnx

__all__ = ["equinox", "keras", "linen", "nnx"]
