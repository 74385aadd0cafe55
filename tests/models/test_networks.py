"""Networks: shapes per the supplementary's tables, parameter counts, gradients, presets."""

from __future__ import annotations

import pytest
import torch

from models import (
    PRESETS,
    ClassifierNet,
    Encoder,
    MelDecoder,
    ModelConfig,
    Predictor,
    PretrainNet,
    ResAtt,
    SeqDecoder,
    count_parameters,
    get_preset,
    parameter_table,
)


@pytest.fixture(scope="module")
def paper() -> ModelConfig:
    return get_preset("paper", n_classes=1101)


def test_paper_preset_matches_the_supplementary_tables(paper):
    assert paper.blocks == (3, 4, 6, 3) and paper.planes == (64, 128, 256, 512)
    assert paper.trunk_channels == 2048 and paper.embed_dim == 512
    assert paper.hidden == 512 and paper.resatt_expand == 1024 and paper.resatt_squeeze == 16


def test_encoder_gives_f_t_512x4_and_u_512(paper):
    enc = Encoder(paper).eval()
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        h = enc.stem(x)
        assert h.shape == (2, 64, 32, 32)                       # Conv_1 + MaxPool
        sizes = []
        for stage in enc.stages:
            h = stage(h)
            sizes.append(tuple(h.shape[1:]))
        assert sizes == [(256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)]
        f_t, u = enc(x)
    assert f_t.shape == (2, 512, 4)
    assert u.shape == (2, 512)
    torch.testing.assert_close(u, f_t.mean(dim=2))


def test_decoders_reach_the_target_sizes_layer_by_layer(paper):
    d1 = MelDecoder(paper).eval()
    h = torch.rand(2, 512)[:, :, None, None]
    convs = [m for m in d1.net if isinstance(m, torch.nn.ConvTranspose2d)]
    expected = [(512, 4), (512, 8), (256, 16), (256, 32), (128, 32), (128, 64), (64, 64),
                (1, 128)]
    assert len(convs) == 8
    with torch.no_grad():
        for layer in d1.net:
            h = layer(h)
            if isinstance(layer, torch.nn.ConvTranspose2d):
                c, s = expected.pop(0)
                assert h.shape[1:] == (c, s, s)
    d2 = SeqDecoder(paper).eval()
    with torch.no_grad():
        assert d2(torch.rand(3, 512, 4)).shape == (3, 128)
    lengths = [m for m in d2.net if isinstance(m, torch.nn.ConvTranspose1d)]
    assert [m.out_channels for m in lengths] == [512, 256, 128, 64, 32]


def test_predictor_outputs_k_logits_and_res_att_gates_multiplicatively(paper):
    p = Predictor(paper).eval()
    with torch.no_grad():
        assert p(torch.rand(4, 512)).shape == (4, 1101)
    block = ResAtt(8, 16, 2, identity_skip=False).eval()
    x = torch.rand(5, 8)
    with torch.no_grad():
        h = block.body(x)
        torch.testing.assert_close(block(x), h * block.gate(h))
    skip = ResAtt(8, 16, 2, identity_skip=True).eval()
    skip.load_state_dict(block.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(skip(x), x + block(x))


def test_paper_parameter_counts_match_spec_table(paper):
    t = parameter_table(paper)
    # spec 4.5: E 24.55 M, D1 12.17 M, D2/D3 0.87 M each, P 4.04 M (K = 1,101), E+P 28.6 M
    assert t["E"] == pytest.approx(24.55e6, rel=0.005)
    assert t["D1"] == pytest.approx(12.17e6, rel=0.005)
    assert t["D2"] == t["D3"] == pytest.approx(0.87e6, rel=0.01)
    assert t["P"] == pytest.approx(4.04e6, rel=0.005)
    assert t["E+P"] == pytest.approx(28.6e6, rel=0.005)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_keeps_the_interfaces(preset):
    cfg = get_preset(preset, n_classes=7)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    if preset == "paper":
        return  # covered above at full size
    net = PretrainNet(cfg).eval()
    with torch.no_grad():
        out, _ = net(torch.rand(2, 1, 128, 128))
        f_t, u = net.encoder(torch.rand(2, 1, 128, 128))
    assert out["mel"].shape == (2, 1, 128, 128)
    assert out["melody"].shape == out["rhythm_logits"].shape == (2, 128)
    assert f_t.shape == (2, cfg.embed_dim, 4) and u.shape == (2, cfg.embed_dim)


def test_small_preset_is_a_few_megabytes():
    t = parameter_table(get_preset("small", n_classes=200))
    assert t["E+P"] * 4 < 8e6


@pytest.mark.parametrize("plain_head", [False, True])
def test_every_parameter_gets_a_gradient(plain_head):
    torch.manual_seed(0)
    cfg = get_preset("tiny", n_classes=5)
    pre = PretrainNet(cfg)
    _, losses = pre(torch.rand(4, 1, 128, 128), torch.rand(4, 128),
                    (torch.rand(4, 128) > 0.7).float())
    losses["total"].backward()
    cls = ClassifierNet(cfg, plain_head=plain_head)
    logits, loss = cls(torch.rand(4, 1, 128, 128), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for net in (pre, cls):
        for name, p in net.named_parameters():
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), name
            if name.endswith("weight"):  # a bias right before a BatchNorm has ~0 gradient
                assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
    assert torch.isfinite(logits).all()


def test_pretrain_loss_uses_the_papers_weights():
    cfg = get_preset("tiny", n_classes=3)
    net = PretrainNet(cfg)
    _, losses = net(torch.rand(2, 1, 128, 128), torch.rand(2, 128),
                    (torch.rand(2, 128) > 0.5).float())
    expected = losses["mel"] + losses["melody"] + 10 * losses["rhythm"]
    torch.testing.assert_close(losses["total"], expected)


def test_unknown_preset_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="unknown model preset"):
        get_preset("huge", n_classes=3)
    with pytest.raises(ValueError, match="n_classes"):
        get_preset("tiny", n_classes=1)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"bogus": 1})


def test_count_parameters_counts_everything():
    m = torch.nn.Linear(3, 2)
    assert count_parameters(m) == 8
