# Development tasks. `make test` is the project's test command (README, .ci/run).
PY ?= python

.PHONY: test export clean-nbs check-sync nbtest pytest browser-deps

export:
	nbdev_export

clean-nbs:
	nbdev_clean

# CI fails when nbdev_export or nbdev_clean would change a tracked file.
check-sync:
	nbdev_export && nbdev_clean
	$(PY) tools/make_readme.py --check
	git diff --exit-code -- robust_prune nbs || (echo "robust_prune/ or nbs/ out of sync: run nbdev_export and nbdev_clean, then commit" && exit 1)

nbtest:
	nbdev_test --n_workers 1 --timing

pytest:
	$(PY) -m pytest tests -q --durations=10

# Debian's Chromium for the browser test of the widgets (tests/test_widgets_browser.py), installed when missing.
browser-deps:
	command -v chromium >/dev/null || ( SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium )

test: browser-deps check-sync nbtest pytest
