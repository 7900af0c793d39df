"""TEMP"""
from bnbench.engine.execution import *  # noqa
from bnbench.engine.execution import _out_of_memory, _vectorized_fn  # noqa
