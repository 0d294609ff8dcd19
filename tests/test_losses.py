"""Every loss against a naive per-token loop, ignored positions, and gradient direction."""

import math

import pytest
import torch

from unlearnkit.training.losses import (
    dpo_loss, grad_ascent_loss, ihl_loss, nll_loss, npo_loss, random_unit_vector, rmu_forget_loss, rmu_loss,
    rmu_retain_loss, satimp_loss, sequence_logprob, simnpo_loss, undial_loss, wga_loss,
)

V = 11


def make_batch(seed=0, B=3, T=7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[:, :2] = -100            # prompt
    labels[1, -2:] = -100           # padding
    return logits, labels


def valid_positions(labels):
    """(b, t, y) for every position whose logits predict a real label (naive loop form)."""
    B, T = labels.shape
    return [(b, t, int(labels[b, t + 1])) for b in range(B) for t in range(T - 1) if labels[b, t + 1] != -100]


def naive_seq_logp(logits, labels):
    out = [0.0] * labels.shape[0]
    count = [0] * labels.shape[0]
    for b, t, y in valid_positions(labels):
        out[b] += math.log(torch.softmax(logits[b, t].double(), -1)[y])
        count[b] += 1
    return out, count


def test_nll_and_grad_ascent_match_loop():
    logits, labels = make_batch()
    pos = valid_positions(labels)
    naive = -sum(math.log(torch.softmax(logits[b, t].double(), -1)[y]) for b, t, y in pos) / len(pos)
    assert nll_loss(logits, labels).item() == pytest.approx(naive, rel=1e-5)
    assert grad_ascent_loss(logits, labels).item() == pytest.approx(-naive, rel=1e-5)


def test_ihl_matches_loop():
    logits, labels = make_batch(1)
    terms = []
    for b, t, y in valid_positions(labels):
        p = torch.softmax(logits[b, t].double(), -1)
        others = torch.cat([p[:y], p[y + 1:]])
        terms.append(1 + p[y].item() - others.max().item())
    assert ihl_loss(logits, labels).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_npo_matches_loop():
    logits, labels = make_batch(2)
    ref, _ = make_batch(3)
    beta = 0.1
    lp, _ = naive_seq_logp(logits, labels)
    rp, _ = naive_seq_logp(ref, labels)
    naive = sum(-(2 / beta) * math.log(1 / (1 + math.exp(beta * (a - r)))) for a, r in zip(lp, rp)) / len(lp)
    assert npo_loss(logits, labels, ref, beta).item() == pytest.approx(naive, rel=1e-5)


def test_npo_at_reference_equals_2_over_beta_log2():
    logits, labels = make_batch(4)
    assert npo_loss(logits, labels, logits.clone(), beta=0.5).item() == pytest.approx(2 / 0.5 * math.log(2), rel=1e-6)


def test_simnpo_matches_loop():
    logits, labels = make_batch(5)
    beta, gamma = 2.5, 0.3
    lp, n = naive_seq_logp(logits, labels)
    naive = sum(-(2 / beta) * math.log(1 / (1 + math.exp(-(-beta * a / c - gamma)))) for a, c in zip(lp, n)) / len(lp)
    assert simnpo_loss(logits, labels, beta, gamma).item() == pytest.approx(naive, rel=1e-5)


def test_dpo_matches_loop():
    cl, cy = make_batch(6)
    rl, ry = make_batch(7)
    rcl, _ = make_batch(8)
    rrl, _ = make_batch(9)
    beta = 0.2
    c, _ = naive_seq_logp(cl, cy)
    r, _ = naive_seq_logp(rl, ry)
    rc, _ = naive_seq_logp(rcl, cy)
    rr, _ = naive_seq_logp(rrl, ry)
    naive = sum(-(2 / beta) * math.log(1 / (1 + math.exp(-beta * ((a - b) - (x - y)))))
                for a, b, x, y in zip(c, rc, r, rr)) / len(c)
    assert dpo_loss(cl, cy, rl, ry, rcl, rrl, beta).item() == pytest.approx(naive, rel=1e-5)


def test_undial_matches_loop():
    logits, labels = make_batch(10)
    teacher, _ = make_batch(11)
    gamma = 4.0
    terms = []
    for b, t, y in valid_positions(labels):
        z = teacher[b, t].double().clone()
        z[y] -= gamma
        target = torch.softmax(z, -1)
        terms.append(-(target * torch.log_softmax(logits[b, t].double(), -1)).sum().item())
    assert undial_loss(logits, labels, teacher, gamma).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_undial_target_lowers_only_the_forgotten_token():
    from unlearnkit.training.losses.undial import undial_targets

    z = torch.randn(1, 1, V)
    y = torch.tensor([[3]])
    before, after = torch.softmax(z, -1), undial_targets(z, y, gamma=5.0)
    assert after[0, 0, 3] < before[0, 0, 3]
    others = [v for v in range(V) if v != 3]
    ratio = after[0, 0, others] / before[0, 0, others]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)  # the rest keeps its shape


ALL_LOSSES = {
    "nll": lambda lg, lb, ref: nll_loss(lg, lb),
    "grad_ascent": lambda lg, lb, ref: grad_ascent_loss(lg, lb),
    "ihl": lambda lg, lb, ref: ihl_loss(lg, lb),
    "npo": lambda lg, lb, ref: npo_loss(lg, lb, ref),
    "simnpo": lambda lg, lb, ref: simnpo_loss(lg, lb),
    "undial": lambda lg, lb, ref: undial_loss(lg, lb, ref, 5.0),
    "wga": lambda lg, lb, ref: wga_loss(lg, lb, 1.0),
    "satimp": lambda lg, lb, ref: satimp_loss(lg, lb, 5.0, 1.0),
}


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_ignored_positions_have_no_effect(name):
    logits, labels = make_batch(12)
    ref, _ = make_batch(13)
    fn = ALL_LOSSES[name]
    base = fn(logits, labels, ref)
    # scramble every logit row that predicts an ignored label: the loss must not move ...
    scrambled = logits.clone()
    ignored = torch.zeros_like(labels, dtype=torch.bool)
    ignored[:, :-1] = labels[:, 1:] == -100
    ignored[:, -1] = True  # the last position predicts nothing
    scrambled[ignored] = torch.randn_like(scrambled[ignored]) * 50
    assert fn(scrambled, labels, ref).item() == pytest.approx(base.item(), rel=1e-6)
    # ... and no gradient may reach those rows
    leaf = logits.clone().requires_grad_(True)
    fn(leaf, labels, ref).backward()
    assert leaf.grad[ignored].abs().max().item() == 0.0
    assert leaf.grad[~ignored].abs().max().item() > 0.0


@pytest.mark.parametrize("name", ["grad_ascent", "ihl", "npo", "simnpo", "undial", "wga", "satimp"])
def test_a_gradient_step_lowers_forget_probability(name):
    logits, labels = make_batch(14)
    ref = logits.clone()
    leaf = logits.clone().requires_grad_(True)
    ALL_LOSSES[name](leaf, labels, ref).backward()
    stepped = (logits - 0.5 * leaf.grad).detach()
    before, _ = sequence_logprob(logits, labels)
    after, _ = sequence_logprob(stepped, labels)
    assert after.sum() < before.sum()


def test_nll_step_raises_probability():
    logits, labels = make_batch(15)
    leaf = logits.clone().requires_grad_(True)
    nll_loss(leaf, labels).backward()
    after, _ = sequence_logprob((logits - 0.5 * leaf.grad).detach(), labels)
    before, _ = sequence_logprob(logits, labels)
    assert after.sum() > before.sum()


def test_ihl_is_bounded_and_zero_gradient_free_when_other_token_dominates():
    logits = torch.zeros(1, 2, V)
    labels = torch.tensor([[-100, 0]])
    logits[0, 0, 5] = 30.0  # another token has all the mass -> l = 1 + 0 - 1 = 0
    assert ihl_loss(logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    logits[0, 0, 0] = 60.0  # the label has all the mass -> l = 2
    assert ihl_loss(logits, labels).item() == pytest.approx(2.0, abs=1e-6)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="disagree"):
        nll_loss(torch.zeros(2, 5, V), torch.zeros(2, 4, dtype=torch.long))


# --- token-weighted gradient ascent (WGA, SatImp) and RMU's activation losses ---

def naive_weighted_ascent(logits, labels, weight):
    """1/N sum_t weight(p_t) * log p_t over answer tokens, one position at a time."""
    terms = []
    for b, t, y in valid_positions(labels):
        p = torch.softmax(logits[b, t].double(), -1)[y].item()
        terms.append(weight(p) * math.log(p))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.5])
def test_wga_matches_loop(beta):
    logits, labels = make_batch(20)
    naive = naive_weighted_ascent(logits, labels, lambda p: p ** beta)
    assert wga_loss(logits, labels, beta).item() == pytest.approx(naive, rel=1e-5)


def test_wga_with_beta_0_is_gradient_ascent():
    logits, labels = make_batch(21)
    assert wga_loss(logits, labels, 0.0).item() == pytest.approx(grad_ascent_loss(logits, labels).item(), rel=1e-6)


@pytest.mark.parametrize("beta1, beta2", [(5.0, 1.0), (1.0, 0.0), (2.0, 3.0)])
def test_satimp_matches_loop(beta1, beta2):
    logits, labels = make_batch(22)
    naive = naive_weighted_ascent(logits, labels, lambda p: p ** beta1 * (1 - p) ** beta2)
    assert satimp_loss(logits, labels, beta1, beta2).item() == pytest.approx(naive, rel=1e-5)


def test_satimp_without_importance_is_wga():
    logits, labels = make_batch(23)
    assert satimp_loss(logits, labels, 2.0, 0.0).item() == pytest.approx(wga_loss(logits, labels, 2.0).item(), rel=1e-6)


@pytest.mark.parametrize("name, fn", [("wga", lambda lg, lb: wga_loss(lg, lb, 1.0)),
                                      ("satimp", lambda lg, lb: satimp_loss(lg, lb, 5.0, 1.0))])
def test_token_weights_are_detached(name, fn):
    """The gradient is w_t * d log p_t (weights held constant), as the formula says."""
    logits, labels = make_batch(24)
    leaf = logits.clone().requires_grad_(True)
    fn(leaf, labels).backward()
    naive = torch.zeros_like(logits, dtype=torch.float64)
    pos = valid_positions(labels)
    for b, t, y in pos:
        p = torch.softmax(logits[b, t].double(), -1)
        py = p[y].item()
        w = py if name == "wga" else py ** 5 * (1 - py)
        grad_logp = -p.clone()
        grad_logp[y] += 1.0  # d log p_y / d logits
        naive[b, t] = w * grad_logp / len(pos)
    assert torch.allclose(leaf.grad.double(), naive, atol=1e-6)


def make_hidden(seed, B=3, T=7, D=5):
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


def naive_activation_mse(hidden, target_at, labels):
    """Per sequence: mean over answer-predicting positions of mean_d (h - target)^2; mean over sequences."""
    B, T, D = hidden.shape
    per_seq = []
    for b in range(B):
        terms = [sum((hidden[b, t, d].item() - target_at(b, t, d)) ** 2 for d in range(D)) / D
                 for t in range(T - 1) if labels[b, t + 1] != -100]
        per_seq.append(sum(terms) / len(terms) if terms else 0.0)
    return sum(per_seq) / B


def test_rmu_forget_loss_matches_loop():
    _, labels = make_batch(25)
    hidden = make_hidden(26)
    u = random_unit_vector(5, seed=3)
    c = 4.0
    naive = naive_activation_mse(hidden, lambda b, t, d: c * u[d].item(), labels)
    assert rmu_forget_loss(hidden, labels, u, c).item() == pytest.approx(naive, rel=1e-5)


def test_rmu_retain_loss_and_total_match_loop():
    _, labels = make_batch(27)
    _, forget_labels = make_batch(28)
    hidden, frozen, forget_hidden = make_hidden(29), make_hidden(30), make_hidden(31)
    naive = naive_activation_mse(hidden, lambda b, t, d: frozen[b, t, d].item(), labels)
    assert rmu_retain_loss(hidden, frozen, labels).item() == pytest.approx(naive, rel=1e-5)
    assert rmu_retain_loss(frozen, frozen, labels).item() == 0.0
    u, c, alpha = random_unit_vector(5, seed=0), 3.0, 7.0
    forget = naive_activation_mse(forget_hidden, lambda b, t, d: c * u[d].item(), forget_labels)
    total = rmu_loss(forget_hidden, forget_labels, hidden, frozen, labels, u, c, alpha)
    assert total.item() == pytest.approx(forget + alpha * naive, rel=1e-5)


def test_rmu_direction_is_a_fixed_unit_vector_per_seed():
    u = random_unit_vector(576, seed=0)
    assert u.norm().item() == pytest.approx(1.0, abs=1e-6) and (u >= 0).all()
    assert torch.equal(u, random_unit_vector(576, seed=0))
    assert not torch.equal(u, random_unit_vector(576, seed=1))
    u.mul_(0)  # a caller scribbling on its copy does not change the direction
    assert random_unit_vector(576, seed=0).norm().item() == pytest.approx(1.0, abs=1e-6)


def test_rmu_losses_ignore_prompt_and_padding_positions():
    _, labels = make_batch(32)
    hidden, frozen = make_hidden(33), make_hidden(34)
    u = random_unit_vector(5, seed=0)
    ignored = torch.zeros_like(labels, dtype=torch.bool)
    ignored[:, :-1] = labels[:, 1:] == -100
    ignored[:, -1] = True
    scrambled = hidden.clone()
    scrambled[ignored] = torch.randn_like(scrambled[ignored]) * 50
    for fn in (lambda h: rmu_forget_loss(h, labels, u, 2.0), lambda h: rmu_retain_loss(h, frozen, labels)):
        assert fn(scrambled).item() == pytest.approx(fn(hidden).item(), rel=1e-6)
        leaf = hidden.clone().requires_grad_(True)
        fn(leaf).backward()
        assert leaf.grad[ignored].abs().max().item() == 0.0 and leaf.grad[~ignored].abs().max().item() > 0


def test_rmu_step_moves_forget_activations_toward_the_target():
    _, labels = make_batch(35)
    hidden = make_hidden(36)
    u, c = random_unit_vector(5, seed=0), 10.0
    leaf = hidden.clone().requires_grad_(True)
    rmu_forget_loss(leaf, labels, u, c).backward()
    stepped = (hidden - 0.5 * leaf.grad).detach()
    assert rmu_forget_loss(stepped, labels, u, c) < rmu_forget_loss(hidden, labels, u, c)


def test_rmu_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="disagree"):
        rmu_forget_loss(torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.long), torch.ones(3), 1.0)
