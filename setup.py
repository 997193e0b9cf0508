"""meprop-nlp: sparsified back propagation (meProp) for NLP. Does not import torch."""

from setuptools import find_packages, setup

setup(
    name="meprop-nlp",
    version="0.1.0",
    description="meProp (Sun et al., ICML 2017): top-k sparsified backprop, a POS tagger and a "
    "transition parser trained with it",
    python_requires=">=3.10",
    packages=find_packages(include=["meprop", "meprop.*", "data", "data.*", "tagger", "tagger.*",
                                    "parser", "parser.*"]),
    package_data={"parser": ["models/*.pt"], "tagger": ["models/*.pt"],
                  "meprop": ["kernels/*.cpp", "kernels/*.h"]},
    install_requires=["torch>=2.4", "conllu", "nltk", "numpy", "click>=8", "tqdm", "ninja"],
    extras_require={"dev": ["pytest", "ruff", "matplotlib"]},
    entry_points={
        "console_scripts": [
            "meprop=meprop.cli:main",
            "tag=tagger.cli:main",
            "parse=parser.cli:main",
        ]
    },
)
