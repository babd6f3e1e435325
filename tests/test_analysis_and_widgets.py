import numpy as np
import pytest
import torch

from course_lib import analysis
from course_lib.attention import AttentionStore
from course_lib.sampling import sample
from course_lib.ui import AttentionExplorer


def test_svd_of_a_block_structured_self_attention_map_shows_the_layout():
    side = 8
    mask = np.zeros((side, side), bool)
    mask[2:6, 1:5] = True
    f = mask.flatten()
    # positions attend uniformly to positions of their own region
    M = torch.tensor(np.where(f[:, None] == f[None, :], 1.0, 0.0))
    M = M / M.sum(1, keepdim=True)
    comps, s = analysis.self_attention_components(M, k=2)
    assert s[0] >= s[1] > 1e-6
    best = max(abs(analysis.map_similarity(torch.tensor(c), torch.tensor(mask, dtype=torch.float64))) for c in comps)
    assert best > 0.9


def test_concentration_and_similarity():
    m = torch.zeros(4, 4)
    m[:2, :2] = 1.0
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True
    assert analysis.concentration(m, mask) > 5
    assert analysis.map_similarity(m, m) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        analysis.concentration(m, np.ones((8, 8), bool))
    rgb, basis = analysis.pca_rgb(torch.randn(16, 4, 4))
    assert rgb.shape == (4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_attention_explorer_callbacks_with_synthetic_events(random_tiny):
    store = AttentionStore(per_step=True)
    prompt = "a red star on a gray background"
    sample(random_tiny, prompt, 3, 7.5, generator=torch.Generator().manual_seed(0), controllers=store, progress=False)
    tokens = [t for t, _ in store.token_maps(random_tiny, prompt)]
    ex = AttentionExplorer(store, tokens)
    full = ex.select(token="star")
    assert full.shape == (16, 16) and ex.position == 3
    one = ex.select(step=1)
    assert ex.step == 1 and not np.allclose(one, full)
    assert ex.select(resolution=8).shape == (8, 8)
    with pytest.raises(ValueError, match="unknown token"):
        ex.select(token="dog")
    with pytest.raises(ValueError, match="step"):
        ex.select(step=99)
    w = ex.widget()
    token_dd = w.children[0].children[0]
    token_dd.value = 2  # a synthetic change event runs the callback
    assert ex.token == "red" and ex.position == 2
    with pytest.raises(ValueError, match="per_step"):
        AttentionExplorer(AttentionStore(), tokens)


def test_attention_explorer_reaches_every_position_of_a_repeated_word(random_tiny):
    """"a red star on a gray background" holds "a" twice: each occurrence is its own entry and map."""
    store = AttentionStore(per_step=True)
    prompt = "a red star on a gray background"
    sample(random_tiny, prompt, 2, 7.5, generator=torch.Generator().manual_seed(0), controllers=store, progress=False)
    maps = store.token_maps(random_tiny, prompt)
    tokens = [t for t, _ in maps]
    assert tokens.count("a") == 2
    ex = AttentionExplorer(store, tokens)
    assert ex.labels[0] == "1: a" and ex.labels[4] == "5: a" and len(set(ex.labels)) == len(tokens)
    for position, (_, m) in enumerate(maps, 1):  # every position shows its own token's map
        np.testing.assert_allclose(ex.select(position=position), m.numpy(), rtol=1e-6, atol=1e-7)
    first, second = ex.select(position=1), ex.select(position=5)
    assert not np.allclose(first, second)
    with pytest.raises(ValueError, match="positions"):
        ex.select(token="a")                                  # ambiguous: ask for the position
    with pytest.raises(ValueError, match="position must be"):
        ex.select(position=len(tokens) + 1)
    w = ex.widget(draw=False)
    token_dd = w.children[0].children[0]
    assert list(token_dd.options) == list(zip(ex.labels, range(1, len(tokens) + 1)))
    token_dd.value = 5                                        # the dropdown reaches the second "a"
    assert ex.position == 5 and np.allclose(ex.current, second)
    fig = ex.figure()                                         # the static view: the map and its colour bar
    assert len(fig.axes) == 2 and "position 5" in fig.axes[0].get_title()
    import matplotlib.pyplot as plt
    plt.close(fig)
