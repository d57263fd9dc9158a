import torch

from vae.models.nets import BernoulliMLP, GaussianMLP, init_normal_, make_decoder, weight_matrices


def test_gaussian_mlp_has_two_separate_linear_heads():
    net = GaussianMLP(10, 7, 3)
    assert net.mean is not net.logvar
    assert net.mean.weight.data_ptr() != net.logvar.weight.data_ptr()
    assert net.mean.weight.shape == net.logvar.weight.shape == (3, 7)
    mean, _ = net(torch.randn(4, 10))
    mean.sum().backward()
    assert net.logvar.weight.grad is None or not net.logvar.weight.grad.any()
    assert net.mean.weight.grad.abs().sum() > 0


def test_gaussian_mlp_follows_eq_12():
    net = GaussianMLP(5, 4, 2)
    v = torch.randn(3, 5)
    h = torch.tanh(v @ net.hidden.weight.T + net.hidden.bias)
    mean, logvar = net(v)
    torch.testing.assert_close(mean, h @ net.mean.weight.T + net.mean.bias)
    torch.testing.assert_close(logvar, h @ net.logvar.weight.T + net.logvar.bias)


def test_sigmoid_mean_lies_in_unit_interval_and_equals_sigmoid_of_the_linear_head():
    plain = GaussianMLP(2, 4, 6)
    squashed = make_decoder("gaussian-sigmoid-mean", 2, 4, 6)
    squashed.load_state_dict(plain.state_dict())
    z = torch.randn(50, 2) * 10
    m, _ = squashed(z)
    assert ((m > 0) & (m < 1)).all()
    torch.testing.assert_close(m, torch.sigmoid(plain(z)[0]))


def test_bernoulli_mlp_follows_eq_11():
    net = BernoulliMLP(3, 4, 5)
    z = torch.randn(2, 3)
    y = torch.sigmoid(net.logits(torch.tanh(net.hidden(z))))
    torch.testing.assert_close(torch.sigmoid(net(z)), y)


def test_init_draws_every_parameter_from_n0_std():
    net = GaussianMLP(784, 500, 20)
    init_normal_(net, 0.01, torch.Generator().manual_seed(0))
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert abs(float(flat.std()) - 0.01) < 2e-4 and abs(float(flat.mean())) < 2e-4
    for p in net.parameters():
        assert p.abs().max() < 0.1


def test_weight_prior_covers_weight_matrices_only():
    net = GaussianMLP(4, 3, 2)
    assert {id(p) for p in weight_matrices(net)} == {id(net.hidden.weight), id(net.mean.weight), id(net.logvar.weight)}


def test_gaussian_decoder_log_density_matches_torch_distributions_with_sigmoid_mean():
    from torch.distributions import Independent, Normal

    dec = make_decoder("gaussian-sigmoid-mean", 3, 8, 5)
    init_normal_(dec, 0.5, torch.Generator().manual_seed(0))
    z, x = torch.randn(4, 3), torch.rand(4, 5)
    h = torch.tanh(dec.hidden(z))
    mean, logvar = torch.sigmoid(dec.mean(h)), dec.logvar(h)
    expected = Independent(Normal(mean, torch.exp(0.5 * logvar)), 1).log_prob(x)
    torch.testing.assert_close(dec.log_prob(x, z), expected)


def test_logvar_floor_bounds_the_variance_smoothly():
    net = GaussianMLP(2, 3, 4, logvar_floor=-5.0)
    with torch.no_grad():
        net.logvar.bias.fill_(-100.0)
    _, logvar = net(torch.randn(6, 2))
    assert (logvar >= -5.0).all() and (logvar < -4.99).all()
    with torch.no_grad():
        net.logvar.bias.fill_(3.0)
        net.logvar.weight.zero_()
    _, high = net(torch.randn(6, 2))
    torch.testing.assert_close(high, torch.full_like(high, 3.0), atol=1e-3, rtol=0)
    net.logvar.bias.grad = None
    net(torch.randn(6, 2))[1].sum().backward()
    assert net.logvar.bias.grad.abs().min() > 0


def test_the_authors_recognition_head_is_scaled_and_starts_at_zero():
    """encoder_logvar_scale multiplies the log-variance head; encoder_logvar_zero_init starts that head at zero
    and leaves every other parameter as drawn for the plain model."""
    from vae.config import make_config
    from vae.models.vae import VAE

    plain = VAE(make_config(dict(hidden=30, nz=4)))
    authors = VAE(make_config(dict(hidden=30, nz=4, encoder_logvar_scale=0.1, encoder_logvar_zero_init=True)))
    x = torch.rand(6, 784)
    assert torch.equal(authors.encode(x)[1], torch.zeros(6, 4))
    for name, p in authors.named_parameters():
        if name.startswith("encoder.logvar"):
            assert not p.any(), name
        else:
            assert torch.equal(p, dict(plain.named_parameters())[name]), name
    authors.encoder.load_state_dict(plain.encoder.state_dict())
    h = torch.tanh(x @ plain.encoder.hidden.weight.T + plain.encoder.hidden.bias)
    torch.testing.assert_close(
        authors.encode(x)[1], 0.1 * (h @ plain.encoder.logvar.weight.T + plain.encoder.logvar.bias)
    )
    torch.testing.assert_close(authors.encode(x)[0], plain.encode(x)[0])
