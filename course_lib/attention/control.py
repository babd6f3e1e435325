"""One attention-control mechanism for every method in the course.

A :class:`Controller` sees each attention layer's queries, keys and values and may change them
(``edit_qkv``), may read or change the attention probabilities (``edit_probs``, only in the layers
where it asks for them with ``wants_probs``), and may change the attention output (``edit_output``).
A controller that only looks (the attention store) reads the layer's maps, averaged over heads, with
``read_maps`` (in the layers where ``reads_maps`` says so) and leaves the computation as it is.
:func:`attention_control` installs a :class:`CourseAttnProcessor` on every layer through diffusers'
own API and always puts the original processors back, also when the body raises.

:func:`controlling` is the whole life of the controllers in one run, and the one sampling loop
(:func:`course_lib.sampling.denoise`) is its only caller besides DragDiffusion's latent optimisation:
it tells each controller the batch layout and the step count once (:meth:`Controller.begin`),
installs them, and after the run restores the processors and calls :meth:`Controller.end`. Inside,
the loop tells controllers which step it is on (:meth:`Controller.set_step`); nothing counts calls.

Where no controller asks for probabilities, a layer runs ``F.scaled_dot_product_attention`` —
the fast path — so a controller that only swaps queries, keys or values costs almost nothing, and
one that only reads maps costs the maps of the conditional half, computed beside the fast path.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from .layers import Layer, unet_layers


@dataclass(frozen=True)
class BatchLayout:
    """How the batch of one UNet call is laid out: ``n`` prompts, times 2 with guidance
    (unconditional half first, as in diffusers)."""

    n: int
    guidance: bool = True

    @property
    def halves(self) -> int:
        return 2 if self.guidance else 1

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(halves * n, ...) -> (halves, n, ...)."""
        return x.view(self.halves, self.n, *x.shape[1:])

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.halves * self.n, *x.shape[2:])

    def copy_source(self, x: torch.Tensor, conditional_only: bool = False) -> torch.Tensor:
        """A copy of ``x`` (a batch laid out as here) in which every target (prompts 1..) holds the
        source's (prompt 0) values: in both halves, or in the conditional half only. How every method
        injects the source: queries and keys (Prompt-to-Prompt, Photoswap's M, Plug-and-Play), a
        self-attention output (Photoswap's phi), a feature map (Plug-and-Play), keys and values
        (DragDiffusion's reference-latent control)."""
        y = self.split(x).clone()  # (halves, n, ...)
        halves = slice(-1, None) if conditional_only else slice(None)
        y[halves, 1:] = y[halves, :1]
        return self.merge(y)


class Controller:
    """Base class: changes nothing. Subclasses override the hooks they need."""

    def __init__(self):
        self.step = 0
        self.layout = BatchLayout(1, True)

    # -- called by :func:`controlling`, once per run: the only place a controller learns the step count
    def begin(self, layout: BatchLayout, num_steps: int):
        """A run of ``num_steps`` steps on batches laid out as ``layout`` starts. Controllers whose
        edits have step windows compute them here, from their config and ``num_steps`` alone."""
        self.layout, self.step = layout, 0

    # -- called by the sampling loop before each UNet call
    def set_step(self, index: int):
        self.step = index

    def end(self):
        pass

    # -- called by attention_control: controllers that hook other modules (features) install here
    def attach(self, unet):
        pass

    def detach(self):
        pass

    # -- called by the attention processor, per layer
    def applies(self, layer: Layer) -> bool:
        return True

    def wants_probs(self, layer: Layer) -> bool:
        return False

    def edit_qkv(self, layer: Layer, q, k, v):
        return q, k, v

    def edit_probs(self, layer: Layer, probs):
        return probs

    def edit_output(self, layer: Layer, out):
        return out

    def reads_maps(self, layer: Layer) -> bool:
        return False

    def read_maps(self, layer: Layer, maps):
        """``maps``: the layer's attention probabilities in the conditional half, averaged over heads,
        (n, queries, keys) in float32, after every controller's edits. Read them; do not change them."""


class CourseAttnProcessor:
    """diffusers attention processor that consults the installed controllers.

    Same arithmetic as diffusers' ``AttnProcessor2_0``; tensors the controllers see are
    (batch, heads, tokens, head_dim) for q/k/v/output and (batch, heads, queries, keys) for probs.
    """

    def __init__(self, layer: Layer, controllers: Sequence[Controller]):
        self.layer = layer
        self.controllers = [c for c in controllers if c.applies(layer)]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, seq_len, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        q = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        k = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        v = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)

        for ctl in self.controllers:
            q, k, v = ctl.edit_qkv(self.layer, q, k, v)
        editors = [ctl for ctl in self.controllers if ctl.wants_probs(self.layer)]
        if editors:
            probs = attention_probs(q, k, attn.scale, attention_mask)
            for ctl in editors:
                probs = ctl.edit_probs(self.layer, probs)
            out = probs.to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=0.0,
                                                 is_causal=False, scale=attn.scale)
        readers = [ctl for ctl in self.controllers if ctl.reads_maps(self.layer)]
        if readers:
            layout = readers[0].layout
            if editors:  # the maps the layer used, edited
                maps = layout.split(probs)[-1].mean(1)
            else:  # the fast path made no maps: those of the conditional half only
                mask = None if attention_mask is None else layout.split(attention_mask)[-1]
                maps = head_mean_probs(layout.split(q)[-1], layout.split(k)[-1], attn.scale, mask)
            for ctl in readers:
                ctl.read_maps(self.layer, maps)
        for ctl in self.controllers:
            out = ctl.edit_output(self.layer, out)

        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(q.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def attention_probs(q, k, scale: float, mask=None) -> torch.Tensor:
    """softmax(q k^T * scale) in float32 (maps are small where they are asked for)."""
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores + mask.float()
    return scores.softmax(-1)


def head_mean_probs(q, k, scale: float, mask=None, max_elements: int | None = None) -> torch.Tensor:
    """:func:`attention_probs` averaged over heads, (batch, queries, keys) in float32, computed for
    blocks of queries so that no more than about ``max_elements`` probabilities exist at once.

    The default block is eight times the size of ``q`` (at least 2**20 probabilities): the reading
    then costs memory of the order of the layer's own activations, where whole maps would not (one of
    SD 1.5's 4096 x 4096 self-attention layers at once takes a GiB; a reduced model's 1024 x 1024
    layers take several times its weights)."""
    batch, heads, queries, _ = q.shape
    if max_elements is None:
        max_elements = max(2 ** 20, 8 * q.numel())
    rows = max(1, max_elements // (batch * heads * k.shape[-2]))
    if rows >= queries:
        return attention_probs(q, k, scale, mask).mean(1)
    out = q.new_empty(batch, queries, k.shape[-2], dtype=torch.float32)
    for s in range(0, queries, rows):
        m = mask if mask is None or mask.shape[-2] == 1 else mask[..., s:s + rows, :]
        out[:, s:s + rows] = attention_probs(q[:, :, s:s + rows], k, scale, m).mean(1)
    return out


@contextlib.contextmanager
def attention_control(unet, controllers: Controller | Iterable[Controller]):
    """Install controllers on every attention layer of ``unet``; restore the original processors on exit.

    ``set_attn_processor`` pops from the dict it is given, so copies are passed both ways.
    """
    ctls = [controllers] if isinstance(controllers, Controller) else list(controllers)
    original = dict(unet.attn_processors)
    layers = unet_layers(unet)
    procs = {name: (CourseAttnProcessor(layers[name], ctls) if name in layers else proc)
             for name, proc in original.items()}
    unet.set_attn_processor(dict(procs))
    tried = []
    try:
        for c in ctls:
            tried.append(c)  # detached on exit even if its attach raised half-way
            c.attach(unet)
        yield ctls[0] if len(ctls) == 1 else ctls
    finally:
        for c in tried:
            c.detach()
        unet.set_attn_processor(dict(original))


@contextlib.contextmanager
def controlling(unet, controllers: Controller | Iterable[Controller] | None, layout: BatchLayout, num_steps: int):
    """The life of the controllers in one run: each is told the batch layout and the step count
    (:meth:`Controller.begin`), installed on ``unet`` (:func:`attention_control`), and, when the body
    ends or raises, the original processors are restored and :meth:`Controller.end` is called.
    Yields the list of controllers (empty: nothing is installed)."""
    ctls = [] if controllers is None else [controllers] if isinstance(controllers, Controller) else list(controllers)
    for c in ctls:
        c.begin(layout, num_steps)
    try:
        if ctls:
            with attention_control(unet, ctls):
                yield ctls
        else:
            yield ctls
    finally:
        for c in ctls:
            c.end()
