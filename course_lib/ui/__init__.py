"""Interactive views for the notebooks, one module per lesson.

Each view keeps its logic in a plain class whose callbacks the tests drive with synthetic events
(``select``, ``click``, ...); ``figure()`` draws the default view as a static matplotlib figure (what the
course's HTML pages show, as they cannot run widgets) and ``widget()`` only wires ipywidgets to the
callbacks. ipywidgets (and, for the drag picker, ipyevents) are imported only when a widget is built.

- :class:`AttentionExplorer` (01): a token's cross-attention map at a step and resolution;
- :class:`P2PSliders` (02): Prompt-to-Prompt's injection windows and re-weighting scale;
- :class:`PnPSliders` (03): Plug-and-Play's feature and self-attention thresholds;
- :class:`PhotoswapSliders` (04): Photoswap's three step counts;
- :class:`EtaSlider` (06): Imagic's interpolation weight eta;
- :class:`DragPicker` and :func:`draw_drag` (07): pick drag points on the image, run the drag.
"""
from .attention import AttentionExplorer, draw_beside, show_beside
from .drag import DragPicker, draw_drag
from .imagic import EtaSlider
from .p2p import P2PSliders
from .photoswap import PhotoswapSliders
from .pnp import PnPSliders

__all__ = ["AttentionExplorer", "DragPicker", "EtaSlider", "P2PSliders", "PhotoswapSliders", "PnPSliders",
           "draw_beside", "draw_drag", "show_beside"]
