import pytest

from guard import Conversation
from guard.conversation import assistant, user
from guard.prompt_guard import pack, split_windows
from guard.tiny import JAILBREAK, PROMPT_GUARD_EXAMPLES, filler

PG = list(PROMPT_GUARD_EXAMPLES.items())


@pytest.mark.parametrize("name, case", PG, ids=[n for n, _ in PG])
def test_known_inputs(prompt_guard, name, case):
    text, label = case
    score = prompt_guard.score(text)
    assert (score.p_malicious > 0.9) if label else (score.p_malicious < 0.1)
    assert score.windows == 1 and score.window == 0


def test_attack_in_a_late_window_of_a_3000_token_text(prompt_guard):
    words = filler(2900, seed=3).split()
    words.insert(len(words) - 40, JAILBREAK)
    text = " ".join(words)
    score = prompt_guard.score(text)
    assert score.tokens >= 2900
    assert score.windows == -(-score.tokens // (prompt_guard.window - 2))
    assert score.window == score.windows - 1  # the last window fired
    assert score.p_malicious > 0.9
    assert max(score.window_scores[:-1]) < 0.1
    # What a 512-token truncation would have seen: only the first window, which is benign.
    assert prompt_guard.score(text[: len(text) // 6]).p_malicious < 0.1


def test_split_windows():
    assert split_windows(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert split_windows([], 2) == [[]]
    with pytest.raises(ValueError):
        split_windows([1], 0)


def test_windows_never_exceed_the_model_window(prompt_guard):
    score = prompt_guard.score(filler(1200))
    assert score.windows == -(-score.tokens // (prompt_guard.window - 2))


def test_scores_each_user_message_and_optionally_the_assistant(prompt_guard):
    conversation = Conversation.build([user("What's the weather like in Paris tomorrow?"),
                                       assistant(JAILBREAK), user(JAILBREAK)])
    users = prompt_guard.score_conversation(conversation)
    assert [(s.index, s.role) for s in users] == [(0, "user"), (2, "user")]
    assert users[0].score.p_malicious < 0.1 < 0.9 < users[1].score.p_malicious
    everyone = prompt_guard.score_conversation(conversation, include_assistant=True)
    assert [(s.index, s.role) for s in everyone] == [(0, "user"), (1, "assistant"), (2, "user")]


def test_batched_windows_score_like_one_at_a_time(prompt_guard):
    texts = [filler(1400, seed=5) + " " + JAILBREAK, "What's the weather like in Paris tomorrow?"]
    batched = prompt_guard.score_many(texts, max_tokens=10**9)
    alone = prompt_guard.score_many(texts, max_batch=1)
    for a, b in zip(batched, alone, strict=True):
        assert (a.window, a.windows, a.tokens) == (b.window, b.windows, b.tokens)
        assert a.window_scores == pytest.approx(b.window_scores, abs=1e-5)


def test_pack_respects_rows_and_padded_tokens():
    windows = [[0] * 500, [0] * 10, [0] * 20, [0] * 30, [0] * 600]
    assert [[len(w) for w in g] for g in pack(windows, 32, 512)] == [[500], [10, 20, 30], [600]]
    assert [[len(w) for w in g] for g in pack(windows, 2, 10**9)] == [[500, 10], [20, 30], [600]]
    assert pack([], 4, 512) == []
