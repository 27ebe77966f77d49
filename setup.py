"""Installs one import namespace, ``codefusion``, from the project's top-level folders (DESIGN §4)."""
from setuptools import setup

PACKAGES = {
    "codefusion": "engine",
    "codefusion.model": "engine/model",
    "codefusion.diffusion": "engine/diffusion",
    "codefusion.backends": "engine/backends",
    "codefusion.train": "engine/train",
    "codefusion.eval": "engine/eval",
    "codefusion.server": "engine/server",
    "codefusion.kernels": "kernels",
    "codefusion.export": "export",
    "codefusion.bench": "bench",
    "codefusion.models": "models",
}

setup(
    name="codefusion-engine",
    version="0.1.0",
    description="CodeFusion text-to-code diffusion: reference model, fast sampling engine, export",
    python_requires=">=3.10",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    # The embedded default checkpoint travels with the package, so a non-editable install has it too.
    # kernels/cpu/*.cpp: the C++ CPU solver step, compiled at first use (kernels/solver_step_cpu.py says why).
    package_data={"codefusion.models": ["*.json", "*.safetensors", "*.md", "*.png"],
                  "codefusion.kernels": ["cpu/*.cpp"]},
    include_package_data=True,
    # torch is a range, never a pin: the README installs the CPU wheel first (torch==2.13.0), and a
    # range it satisfies makes pip keep it instead of pulling a multi-GB CUDA build.
    install_requires=[
        "torch>=2.11",
        "transformers>=4.45",
        "tokenizers>=0.19",
        "safetensors>=0.4",
        "numpy>=1.24",
        "tqdm>=4.66",
        "tree-sitter>=0.23",
        "tree-sitter-python>=0.23",
        "tree-sitter-bash>=0.23",
        "bashlex>=0.18",
        "sacrebleu>=2.4",
        "fastapi>=0.110",  # codefusion serve
        "uvicorn>=0.29",
        "prometheus-client>=0.20",
        "httpx>=0.27",
    ],
    extras_require={
        # dev = everything the test suite exercises (.ci/run installs it): export, Triton's interpreter,
        # ninja for the C++ CPU kernel; Ray Serve stays opt-in (0.5 GB; its test is marked slow)
        "dev": ["pytest>=8", "matplotlib>=3.8", "onnx>=1.17", "onnxruntime>=1.20", "onnxscript>=0.2", "triton>=3.6",
                "ninja>=1.11"],
        "test": ["pytest>=8"],
        "plot": ["matplotlib>=3.8"],
        "export": ["onnx>=1.17", "onnxruntime>=1.20", "onnxscript>=0.2"],
        "triton": ["triton>=3.6"],
        "ray": ["ray[serve]>=2.40"],
    },
    entry_points={"console_scripts": ["codefusion=codefusion.cli:main"]},
)
