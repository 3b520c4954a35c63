# Development tasks. `make test` is the project's test command (README, .ci/run).
PY ?= python

.PHONY: test export clean-nbs check-sync nbtest pytest browser-deps mutate mutation-score

export:
	nbdev_export

clean-nbs:
	nbdev_clean

# CI fails when nbdev_export or nbdev_clean would change a tracked file.
check-sync:
	nbdev_export && nbdev_clean
	$(PY) tools/make_readme.py --check
	git diff --exit-code -- robust_prune nbs || (echo "robust_prune/ or nbs/ out of sync: run nbdev_export and nbdev_clean, then commit" && exit 1)

# The tutorials run in a real Jupyter kernel under pytest instead (tests/test_tutorials.py), which also checks
# that a fresh run reproduces the numbers stored in them. Cells marked `#| slow` or `#| gpu` are skipped (tst_flags in
# settings.ini); ROBUST_PRUNE_SLOW=1 runs the slow ones too, as it does for the slow tests.
nbtest:
	nbdev_test --n_workers 1 --timing --skip_folder_re "^([_.]|tutorials$$)" $(if $(filter 1,$(ROBUST_PRUNE_SLOW)),--flags slow,)

pytest:
	$(PY) -m pytest tests -q --durations=10

# Debian's Chromium for the browser test of the widgets (tests/test_widgets_browser.py), installed when missing.
browser-deps:
	command -v chromium >/dev/null || ( SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium )

test: browser-deps check-sync nbtest pytest

# Mutation testing of the core modules (not part of `make test` or CI; about an hour on 2 cores): each mutant runs
# the fast tests that call the function it changes ([tool.mutmut] in pyproject.toml). Results stay in mutants/ and a
# second run only tries what has no result yet. `make mutate MUTANTS="robust_prune.pruning*"` runs one module.
MUTANTS ?=
mutate:
	OMP_NUM_THREADS=1 mutmut run --max-children 2 $(MUTANTS)
	$(PY) tools/mutation_score.py

# The table in TESTING.md (killed ÷ non-equivalent per module, tests/mutation_equivalent.txt lists the equivalent ones)
mutation-score:
	$(PY) tools/mutation_score.py --markdown
