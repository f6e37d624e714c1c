"""SASRec and BERT4Rec: attention direction, padding, cloze masks, leak-free windows and
histories, per-model training defaults, and a short run that beats popularity on planted
sequential patterns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from graphrec.batches import History, SequenceBatch, SequenceBatches, make_batches
from graphrec.config import resolve
from graphrec.data.graph import build, make_graph, user_sequences
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig, evaluate
from graphrec.models import build_model, model_config
from graphrec.models.sasrec import SASRec
from graphrec.nn.transformer import tail_windows
from graphrec.split import SplitConfig, split
from graphrec.trainer import TrainConfig, train_model

NUM_ITEMS = 30


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Small tensors on a shared 2-core machine: a second OpenMP thread only spins.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(name: str, **options):
    torch.manual_seed(0)
    return build_model(name, 7, NUM_ITEMS, model_config(name, {"max_len": 8, **options})).eval()


@pytest.fixture(scope="module")
def synthetic():
    ds = build(make_synthetic(SyntheticConfig(num_users=300, num_items=120, num_clusters=6,
                                              min_len=10, max_len=30, p_next=0.7)))
    return ds, split(ds.graph, SplitConfig("leave-one-out"))


def test_sasrec_is_causal():
    model = _model("sasrec")
    pad = model.pad
    seqs = torch.tensor([[pad, pad, 3, 4, 5, 6, 7, 8]])
    changed = seqs.clone()
    changed[0, 5:] = torch.tensor([20, 21, 22])  # items after position t = 4
    h, h2 = model.encoder(seqs), model.encoder(changed)
    torch.testing.assert_close(h[0, :5], h2[0, :5], rtol=0, atol=0)
    assert (h[0, 5:] - h2[0, 5:]).abs().max() > 1e-3  # the later positions do see them


def test_bert4rec_sees_both_sides():
    model = _model("bert4rec")
    pad = model.pad
    seqs = torch.tensor([[pad, pad, 3, 4, 5, 6, 7, 8]])
    changed = seqs.clone()
    changed[0, 7] = 20  # a later item
    h, h2 = model.encoder(seqs), model.encoder(changed)
    assert (h[0, 2] - h2[0, 2]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_padding_changes_nothing(name):
    model = _model(name)
    pad = model.pad
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[pad, pad, pad, pad, pad, 3, 4, 5]])
    torch.testing.assert_close(model.encoder(padded)[:, 5:], model.encoder(short))
    assert (model.encoder(padded)[:, :5] == 0).all()
    # the loss of a padded window equals that of the bare one
    if name == "sasrec":
        torch.testing.assert_close(model.loss(padded), model.loss(short))
    else:
        mask = torch.zeros(1, 8, dtype=torch.bool)
        mask[0, 6] = True
        torch.testing.assert_close(model.loss(padded, mask), model.loss(short, mask[:, 5:]))
    # scores from a history are those of the bare history, whatever the window length
    history = History(torch.tensor([0, 3]), torch.tensor([3, 4, 5]))
    if name == "sasrec":
        h = model.encoder(short)[:, -1]
    else:
        h = model.encoder(torch.tensor([[3, 4, 5, model.mask_token]]))[:, -1]
    torch.testing.assert_close(model.score(torch.tensor([0]), history), h @ model.item_weights().T)
    # a retriever: the hidden state and the tied item embeddings reproduce the scores
    torch.testing.assert_close(model.user_vectors(torch.tensor([0]), history) @
                               model.item_vectors().T, model.score(torch.tensor([0]), history))


def test_cloze_masks_hit_real_positions_and_loss_counts_only_them():
    user = torch.tensor([0] * 3 + [1] * 12 + [2] * 1 + [3] * 6)
    item = torch.cat([torch.arange(3), torch.arange(12), torch.arange(1), torch.arange(6)])
    g = make_graph(4, 15, user, item, {"time": torch.arange(user.numel())})
    batches = SequenceBatches(g, length=8, pad=15, mask_prob=0.3)
    assert batches.users.tolist() == [0, 1, 3]  # users with at least two items
    gen = torch.Generator().manual_seed(0)
    total, masked = 0, 0
    for _ in range(200):
        b = batches.batch(torch.arange(3), gen)
        real = b.seqs != 15
        assert not (b.mask & ~real).any() and b.mask.any(1).all()
        total, masked = total + int(real.sum()), masked + int(b.mask.sum())
    assert 0.27 < masked / total < 0.37

    model = build_model("bert4rec", 4, 15, model_config("bert4rec", {"max_len": 8})).eval()
    seqs, mask = b.seqs, b.mask
    h = model.encoder(seqs.masked_fill(mask, model.mask_token))
    per_position = F.cross_entropy((h @ model.item_weights().T).flatten(0, 1),
                                   seqs.clamp(max=14).flatten(), reduction="none").view(seqs.shape)
    torch.testing.assert_close(model.loss(seqs, mask), per_position[mask].mean())
    with pytest.raises(GraphrecError, match="padding"):
        model.loss(seqs, mask | (seqs == 15))


def test_sasrec_losses_and_negatives(synthetic):
    ds, parts = synthetic
    for loss, width in (("bce", 8), ("sampled-ce", 5), ("ce", None)):
        model = build_model("sasrec", ds.num_users, ds.num_items,
                            model_config("sasrec", {"max_len": 8, "loss": loss, "num_negatives": 5}))
        batches = make_batches(model.batch_spec(), parts.train)
        b = batches.batch(torch.arange(16), torch.Generator().manual_seed(0))
        assert isinstance(b, SequenceBatch) and b.seqs.shape == (16, 9)
        if width is None:
            assert b.negatives is None
        else:  # never one of the user's training items
            assert b.negatives.shape == (16, width)
            users = batches.users[:16]
            ptr, seq = user_sequences(parts.train)
            for row, u in enumerate(users.tolist()):
                mine = seq[ptr[u]:ptr[u + 1]]
                assert not torch.isin(b.negatives[row], mine).any()
        value = model(b)
        assert torch.isfinite(value) and value > 0


def test_windows_hold_training_items_only(synthetic):
    ds, parts = synthetic
    model = build_model("sasrec", ds.num_users, ds.num_items, model_config("sasrec", {"max_len": 12}))
    batches = make_batches(model.batch_spec(), parts.train)
    b = batches.batch(torch.arange(batches.num_examples), torch.Generator())
    seqs = b.seqs
    ptr, items = user_sequences(parts.train)
    assert torch.equal(seqs, tail_windows(ptr, items, batches.users, 13, model.pad))
    full_ptr, full_items = user_sequences(ds.graph)
    for row, u in enumerate(batches.users.tolist()):
        held = set(parts.test.item[parts.test.user == u].tolist())
        held |= set(parts.valid.item[parts.valid.user == u].tolist())
        window = [i for i in seqs[row].tolist() if i != model.pad]
        assert held and not held & set(window)
        # the window is the tail of the user's time-ordered sequence before the held-out items
        seq = full_items[full_ptr[u]:full_ptr[u + 1]].tolist()
        assert window == seq[:-2][-13:]


def test_evaluator_hands_over_the_right_history(synthetic, monkeypatch):
    ds, parts = synthetic
    model = build_model("sasrec", ds.num_users, ds.num_items, model_config("sasrec", {"max_len": 6}))
    model.fit(parts.train)
    seen = []
    score = SASRec.score

    def spy(self, users, history=None):
        seen.append(history.windows(4, -1))
        return score(self, users, history)

    monkeypatch.setattr(SASRec, "score", spy)
    before = model.history_items.clone()
    full_ptr, full_items = user_sequences(ds.graph)
    for part, drop in (("valid", 2), ("test", 1)):
        seen.clear()
        evaluate(model, parts, part, EvalConfig(ks=(10,), progress=False))
        users = (getattr(parts, part).user)
        want = torch.stack([torch.tensor(full_items[full_ptr[u]:full_ptr[u + 1]].tolist()[:-drop][-4:])
                            for u in users.tolist()])
        torch.testing.assert_close(torch.cat(seen), want)  # every user has >= 10 items
    # nothing was swapped into the model: its (training) history is untouched
    assert torch.equal(model.history_items, before)
    assert torch.equal(model.history_items, user_sequences(parts.train)[1])


def test_keep_seen_option_ranks_earlier_items(synthetic):
    ds, parts = synthetic
    pop = build_model("pop", ds.num_users, ds.num_items)
    pop.fit(parts.train)
    cfg = EvalConfig(ks=(10,), metrics=("ndcg",), progress=False)
    excluded = evaluate(pop, parts, "test", cfg)["ndcg@10"]
    cfg.exclude_seen = False
    assert evaluate(pop, parts, "test", cfg)["ndcg@10"] < excluded


@pytest.mark.parametrize("name,epochs", [("sasrec", 8), ("bert4rec", 25)])
def test_beats_popularity_on_planted_sequences(name, epochs, synthetic):
    ds, parts = synthetic
    cfg = EvalConfig(ks=(10,), metrics=("ndcg", "hit"), progress=False)
    pop = build_model("pop", ds.num_users, ds.num_items)
    pop.fit(parts.train)
    baseline = evaluate(pop, parts, "test", cfg)["ndcg@10"]
    torch.manual_seed(0)
    model = build_model(name, ds.num_users, ds.num_items,
                        model_config(name, {"max_len": 20, "dim": 32}))
    model.fit(parts.train)
    train_model(model, parts, TrainConfig(epochs=epochs, batch_size=64, lr=5e-3, patience=0,
                                          metric="ndcg@10", progress=False), cfg)
    ndcg = evaluate(model, parts, "test", cfg)["ndcg@10"]
    assert ndcg > 2 * baseline, (ndcg, baseline)


def test_bad_settings_are_one_line_errors():
    for name, options, match in (("sasrec", {"max_len": 1}, "max_len must be at least 2"),
                                 ("bert4rec", {"max_len": 0}, "max_len must be at least 2"),
                                 ("bert4rec", {"mask_prob": 0.0}, r"mask_prob must lie in \(0, 1\)"),
                                 ("bert4rec", {"mask_prob": 1.0}, r"mask_prob must lie in \(0, 1\)"),
                                 ("sasrec", {"loss": "hinge"}, "loss must be one of")):
        with pytest.raises(GraphrecError, match=match) as info:
            build_model(name, 3, 10, model_config(name, options))
        assert "\n" not in str(info.value)


def test_sequence_models_have_their_own_training_defaults():
    seq = resolve({}, {"": {"model": "sasrec"}}).train
    assert (seq.batch_size, seq.lr, seq.patience, seq.metric) == (64, 3e-3, 10, "ndcg@10")
    bert = resolve({}, {"": {"model": "bert4rec"}}).train
    assert (bert.batch_size, bert.lr, bert.patience, bert.metric) == (128, 3e-3, 30, "ndcg@10")
    graph = resolve({}, {"": {"model": "bpr"}}).train
    assert (graph.batch_size, graph.metric) == (2048, "ndcg@20")  # others keep TrainConfig's
    # the file overrides the model's defaults, flags override the file
    cfg = resolve({"model": "sasrec", "train": {"batch_size": 64, "metric": "hit@20"}},
                  {"train": {"batch_size": 32}}).train
    assert (cfg.batch_size, cfg.metric, cfg.lr) == (32, "hit@20", 3e-3)


def test_recommend_gives_next_items_after_the_full_history(synthetic, tmp_path):
    from graphrec.checkpoint import load_checkpoint, save_checkpoint
    from graphrec.serve.recommend import recommend

    ds, parts = synthetic
    model = build_model("sasrec", ds.num_users, ds.num_items, model_config("sasrec", {"max_len": 6}))
    model.fit(parts.train)
    save_checkpoint(tmp_path / "model.pt", "sasrec", model.cfg, model, ds, {})
    ckpt = load_checkpoint(tmp_path)
    users = torch.arange(30)
    items, _ = recommend(ckpt, users, k=5)
    full = user_sequences(ds.graph)
    ref = SASRec(ds.num_users, ds.num_items, model.cfg).eval()
    ref.load_state_dict(model.state_dict())

    def top(history):
        scores = ref.score(users, History.of(*history, users))
        pos = torch.repeat_interleave(users, full[0].diff()[users])
        scores[pos, torch.cat([full[1][full[0][u]:full[0][u + 1]] for u in users])] = -float("inf")
        return scores.topk(5, dim=1).indices

    assert torch.equal(items, top(full))  # served from every known interaction
    assert not torch.equal(items, top(user_sequences(parts.train)))
    assert torch.equal(ckpt.model.history_items, user_sequences(parts.train)[1])  # untouched


def test_leave_one_out_without_timestamps_and_small_users(caplog):
    # user 0: 1 interaction, 1: 2, 2: 3, 3: 4; no timestamps: file order is time order
    user = torch.tensor([0, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    item = torch.tensor([5, 4, 1, 0, 3, 2, 1, 2, 0, 4])
    g = make_graph(4, 6, user, item, {})
    with caplog.at_level("WARNING"):
        parts = split(g, SplitConfig("leave-one-out"))
    assert "file order" in caplog.text
    assert parts.test.user.tolist() == [1, 2, 3] and parts.test.item.tolist() == [1, 2, 4]
    assert parts.valid.user.tolist() == [2, 3] and parts.valid.item.tolist() == [3, 0]
    model = build_model("sasrec", 4, 6, model_config("sasrec", {"max_len": 4}))
    batches = make_batches(model.batch_spec(), parts.train)
    assert batches.users.tolist() == [3]  # the only user left with two training items
    model.fit(parts.train)
    scores = model.score(torch.arange(4))  # users 0-2 are still scored from their one item
    assert torch.isfinite(scores).all()
