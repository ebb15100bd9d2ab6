"""Published figures of Chutes production traffic, used as data (no code of the source is used).

Source: W. Nixon, J. Durbin, F. Standhartinger, H. S. Gunawi, J. Yang, "A Year in LLM Serving:
Workload Evolution, Caching and Load-Balancing", PVLDB 2027. Artifact repository
``HarvardMadSys/chutes_workload`` (commit 1f61bfb6ae429820ac3d43ad436cff1c069a348f), data
licensed under CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/). Files used:

- ``data/sessions/chain_summary_v32.json``, ``data/sessions/chain_summary_minimax.json``:
  the busiest 7 days of one chute each, conversations rebuilt by the authors (lookback 10):
  requests, sessions, the turn-id histogram (turn 0..19), the follow-up count statistics and the
  share of input tokens that repeat the session's earlier prefix (``structural_reuse_ratio``);
- ``data/caching/traces/samples/deepseek_v32_samples.json`` and ``minimax_m25_samples.json``:
  the published sample sessions, per turn ``(ts, it, ot, ct)`` = start time (s), input tokens,
  output tokens, cached tokens. Transcribed below unchanged (the ``turn_id`` is the position);
- ``data/sessions/chain_samples_excerpt_v32.json``, ``chain_samples_excerpt_minimax.json``: one
  recovered session per length class, per turn ``(gap_from_parent_sec, it, ot, ct)``, and one
  single-turn request with its ``(it, ot, ct)`` (:data:`EXCERPTS`, :data:`EXCERPT_SINGLES`);
- ``data/routing/figure20_sweep.csv``: the replayed window's ``input_tokens`` and
  ``output_tokens`` totals (the same on every row of a model; :data:`OUTPUT_TOKENS_TOTAL`);
- ``config/cachesim.json``: ``working_set_bytes`` = the sum of the first turns' input tokens
  (1 token = 1 byte there; :data:`FIRST_TURN_TOKENS_TOTAL`).

Changes: none to the values; the JSON and CSV layouts are rewritten as Python tuples.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChainSummary", "CHAINS", "SAMPLES", "EXCERPTS", "EXCERPT_SINGLES", "OUTPUT_TOKENS_TOTAL",
           "FIRST_TURN_TOKENS_TOTAL", "CITATION"]

CITATION = ("Nixon, Durbin, Standhartinger, Gunawi, Yang: \"A Year in LLM Serving: Workload Evolution, Caching "
            "and Load-Balancing\", PVLDB 2027; data HarvardMadSys/chutes_workload, CC BY 4.0")


@dataclass(frozen=True)
class ChainSummary:
    model: str
    requests: int
    sessions: int
    linked_turns: int  # follow-up turns
    length_0_fraction: float  # sessions without a follow-up
    followups_mean: float
    followups_median: float
    followups_p90: float
    followups_p99: float
    followups_max: int
    turn_id_histogram: tuple[int, ...]  # requests with turn id 0, 1, ..., 19
    input_tokens_total: int
    structural_prefix_tokens_total: int

    @property
    def reuse_ratio(self) -> float:
        return self.structural_prefix_tokens_total / self.input_tokens_total

    @property
    def mean_input_tokens(self) -> float:
        return self.input_tokens_total / self.requests


CHAINS: dict[str, ChainSummary] = {
    "deepseek-v32": ChainSummary(
        model="deepseek-ai/DeepSeek-V3.2-TEE", requests=7197399, sessions=2473709, linked_turns=4723690,
        length_0_fraction=0.4067285198056845, followups_mean=1.9095576723050287, followups_median=1.0,
        followups_p90=5.0, followups_p99=10.0, followups_max=389,
        turn_id_histogram=(2473709, 1467581, 1031956, 746506, 519172, 335670, 200863, 113498, 64382, 39289,
                           27237, 20892, 17042, 14414, 12317, 10668, 9308, 8187, 7216, 6395),
        input_tokens_total=85293000901, structural_prefix_tokens_total=46769637566),
    "minimax-m25": ChainSummary(
        model="MiniMaxAI/MiniMax-M2.5-TEE", requests=4223356, sessions=1079756, linked_turns=3143600,
        length_0_fraction=0.3584559845002019, followups_mean=2.911398501142851, followups_median=2.0,
        followups_p90=7.0, followups_p99=11.0, followups_max=134,
        turn_id_histogram=(1079756, 692711, 585561, 501990, 415237, 322989, 230073, 147864, 85596, 44995,
                           22790, 12139, 7566, 5657, 4814, 4328, 3979, 3704, 3467, 3232),
        input_tokens_total=135338664262, structural_prefix_tokens_total=86920137960),
}

# (ts, it, ot, ct) per turn; sessions grouped as published ("single_turn", "short_2_4", "medium_5_9",
# "long_10_plus"), flattened here in that order.
SAMPLES: dict[str, tuple[tuple[tuple[int, int, int, int], ...], ...]] = {
    "deepseek-v32": (
        ((1770767344, 26188, 1656, 0),),
        ((1770767642, 26188, 1526, 128),),
        ((1770767651, 26188, 1853, 26176),),
        ((1770769844, 22138, 904, 128), (1770770717, 25168, 2031, 0)),
        ((1770769933, 22138, 1196, 0), (1770770419, 25168, 2104, 0)),
        ((1770770120, 21205, 1282, 0), (1770770723, 25168, 2217, 25152)),
        ((1770840270, 17607, 1107, 128), (1770841231, 23039, 909, 128), (1770842237, 27793, 1680, 128),
         (1770843963, 30307, 1560, 128), (1770845281, 33587, 1107, 33536), (1770846066, 35415, 1109, 0)),
        ((1770840972, 15614, 474, 128), (1770841756, 23039, 633, 0), (1770843211, 27793, 2369, 128),
         (1770843718, 30307, 1829, 128), (1770845268, 33587, 1091, 0), (1770846251, 35415, 840, 128)),
        ((1770901761, 5794, 456, 128), (1770902561, 7117, 743, 0), (1770903758, 14441, 689, 128),
         (1770904751, 16042, 816, 128), (1770905995, 17377, 1156, 0), (1770918382, 36728, 859, 0)),
        ((1770776237, 952, 1045, 0), (1770776853, 2492, 911, 0), (1770776937, 3421, 1004, 2432),
         (1770780054, 4445, 171, 0), (1770780106, 4667, 224, 0), (1770780344, 4931, 226, 0),
         (1770780372, 5182, 210, 4928), (1770780581, 5439, 189, 0), (1770780753, 5675, 245, 0),
         (1770781660, 5955, 199, 0), (1770783211, 6246, 219, 0), (1770783398, 6489, 183, 0),
         (1770783440, 6701, 171, 6464), (1770783607, 6897, 192, 0), (1770784067, 7746, 182, 0)),
        ((1770778355, 1948, 1275, 0), (1770779863, 3940, 173, 3904), (1770780013, 4163, 246, 4160),
         (1770780126, 4667, 201, 4608), (1770783650, 6921, 207, 6848), (1770783674, 7147, 187, 0),
         (1770783700, 7357, 176, 0), (1770783728, 7555, 159, 0), (1770784053, 7746, 189, 0),
         (1770784680, 7980, 142, 0), (1770785565, 8153, 140, 0), (1770785587, 8318, 193, 8128),
         (1770786365, 8545, 190, 0), (1770786854, 8764, 170, 0), (1770786879, 8957, 201, 8704)),
        ((1770509003, 1334, 1333, 0), (1770510317, 2839, 222, 2816), (1770510411, 3105, 332, 3072),
         (1770510929, 4883, 498, 4800), (1770511018, 5447, 449, 0), (1770511098, 5962, 416, 0),
         (1770511134, 6409, 216, 5952), (1770511185, 6692, 294, 0), (1770511235, 7028, 252, 0),
         (1770511285, 7337, 219, 4736), (1770511675, 9150, 332, 0)),
    ),
    "minimax-m25": (
        ((1774352844, 5324, 290, 0),),
        ((1774502600, 5563, 742, 0),),
        ((1774502688, 5574, 633, 0),),
        ((1774720633, 11973, 138, 656), (1774720640, 21586, 628, 0), (1774720662, 22376, 69, 0),
         (1774720666, 24804, 1447, 0)),
        ((1774858326, 15795, 74, 0), (1774858334, 16500, 673, 15792), (1774861302, 19631, 105, 1344)),
        ((1774858363, 16658, 730, 0), (1774859503, 19631, 114, 1344)),
        ((1774369830, 19631, 412, 256), (1774371613, 20264, 96, 1424), (1774371617, 20749, 341, 256),
         (1774371636, 21095, 47, 1424), (1774371651, 21218, 111, 4880)),
        ((1774864859, 14711, 122, 0), (1774864913, 15422, 108, 15024), (1774864919, 15539, 79, 15408),
         (1774864925, 18373, 201, 15536), (1774864940, 18762, 69, 18368), (1774865005, 19212, 84, 18752),
         (1774865012, 19329, 133, 19200)),
        ((1774865017, 19447, 119, 19312), (1774865202, 26004, 305, 21568), (1774865210, 26685, 403, 25584),
         (1774865221, 27992, 295, 21008), (1774865231, 28479, 673, 26000), (1774865314, 31132, 22, 30512)),
        ((1774620308, 61437, 1507, 0), (1774620354, 63462, 81, 0), (1774620362, 66380, 195, 0),
         (1774620372, 66956, 185, 0), (1774620381, 68868, 696, 0), (1774620402, 69963, 633, 66944),
         (1774620419, 71137, 100, 0), (1774620429, 73149, 218, 0), (1774620441, 73900, 156, 0),
         (1774620450, 74477, 79, 73888), (1774620456, 76132, 223, 63456), (1774620464, 76811, 101, 76128),
         (1774620625, 77437, 117, 68864), (1774620651, 81465, 136, 71120), (1774620687, 82065, 118, 69952),
         (1774620695, 82642, 644, 61424), (1774620743, 83510, 151, 66368), (1774620762, 84141, 127, 83504),
         (1774620771, 84762, 413, 82048), (1774621459, 86525, 240, 0), (1774621474, 87151, 169, 0),
         (1774621489, 87863, 139, 656), (1774621508, 88509, 216, 656)),
        ((1774720656, 21972, 66, 11968), (1774720707, 26170, 370, 22368), (1774720719, 35935, 515, 21568),
         (1774721299, 36587, 4682, 656), (1774721403, 41446, 374, 0), (1774721416, 42150, 88, 0),
         (1774721437, 45864, 533, 36576), (1774722213, 50883, 836, 27936), (1774722959, 108312, 788, 0),
         (1774723055, 109168, 1185, 0), (1774723131, 112073, 618, 107824), (1774723145, 113517, 828, 111552),
         (1774723163, 136178, 1357, 113504), (1774723263, 140346, 773, 66560), (1774724797, 141920, 1083, 656)),
        ((1774722150, 12837, 354, 0), (1774722169, 23019, 143, 0), (1774722177, 25492, 255, 12832),
         (1774722185, 26124, 106, 25488), (1774722191, 27941, 122, 23008), (1774722199, 28507, 81, 26112),
         (1774722203, 29188, 248, 0), (1774722235, 51614, 270, 0), (1774722898, 65206, 674, 0),
         (1774722920, 66568, 630, 0), (1774722934, 107840, 927, 0), (1774723085, 110310, 803, 0),
         (1774723111, 111567, 667, 656), (1774723195, 137468, 1303, 136160), (1774723221, 138780, 1844, 137456),
         (1774724939, 142894, 546, 0), (1774725283, 143734, 130, 656), (1774725299, 144349, 33, 0),
         (1774725388, 147915, 3388, 143728), (1774725497, 151584, 472, 0)),
    ),
}

# figure20_sweep.csv: output_tokens of the replayed 7-day window (its input_tokens equal the chain summaries')
OUTPUT_TOKENS_TOTAL: dict[str, int] = {"deepseek-v32": 3391979594, "minimax-m25": 1147556664}
# cachesim.json working_set_bytes: the sum of the first turns' input tokens
FIRST_TURN_TOKENS_TOTAL: dict[str, int] = {"deepseek-v32": 21094370937, "minimax-m25": 6311046392}

# chain_samples_excerpt_*.json: per recovered session (short_2_4, medium_5_9, long_10_plus), per turn
# (gap_from_parent_sec, it, ot, ct); the gap of turn 0 is None.
EXCERPTS: dict[str, tuple[tuple[tuple[float | None, int, int, int], ...], ...]] = {
    "deepseek-v32": (
        ((None, 13527, 276, 0), (52.655321, 32639, 628, 0)),
        ((None, 4751, 318, 0), (0.654398, 13818, 215, 320), (0.688671, 22231, 4, 22016), (0.992336, 94726, 81, 320),
         (1.313574, 139150, 1, 0)),
        ((None, 10699, 130, 10688), (72.908282, 10872, 172, 0), (58.990714, 11092, 192, 10752),
         (59.468694, 11313, 228, 0), (71.01601, 11570, 197, 0), (72.838114, 11801, 178, 0), (37.72407, 12017, 182, 0),
         (95.567666, 12231, 277, 0), (550.458416, 14133, 189, 0), (70.082621, 14366, 136, 0)),
    ),
    "minimax-m25": (
        ((None, 18946, 529, 16608), (0.171815, 27167, 128, 26832)),
        ((None, 8903, 69, 144), (0.000801, 9871, 288, 1392), (0.021126, 12615, 156, 400), (0.001973, 14722, 58, 1520),
         (0.005902, 17022, 158, 352)),
        ((None, 9676, 64, 1392), (0.024333, 12388, 83, 640), (0.048093, 13889, 441, 1184), (0.018401, 14336, 377, 1440),
         (0.00588, 16446, 139, 1552), (0.048838, 17096, 47, 1440), (0.047522, 18897, 77, 368),
         (0.002725, 20433, 58, 1424), (0.136194, 26533, 68, 21136), (0.014772, 41124, 70, 0)),
    ),
}
# the excerpts' single-turn request that arrived with cached tokens: (it, ot, ct)
EXCERPT_SINGLES: dict[str, tuple[int, int, int]] = {"deepseek-v32": (3574, 221, 3456),
                                                    "minimax-m25": (31552, 300, 28768)}
