"""The head scores a scan can compute, by name (kept free of heavy imports: the CLI reads them)."""

RANDOM_SCORES = ("prev_token", "duplicate", "induction")
TEXT_SCORES = ("prev_token_text", "duplicate_text", "induction_text", "ngram")
PATTERN_SCORES = (*RANDOM_SCORES, *TEXT_SCORES)
SCORES = (*PATTERN_SCORES, "retrieval")
NGRAM_ORDERS = (1, 2, 3, 4)
# The order of scores in every table and report, whatever order the work was done or resumed in.
OUTPUT_ORDER = (*RANDOM_SCORES, *TEXT_SCORES[:3], *(f"ngram{n}" for n in NGRAM_ORDERS), "retrieval")
