"""Typed configuration, defined once: the run plan saved as ``plan.json`` beside every model, and the options
of ``voxseg train`` (:class:`TrainOptions`), each a field whose knob metadata says its flag, help, group, range
and choices. Every later stage reads its settings from here."""
from voxseg.config.knobs import (GROUPS, PARSERS, Knob, interval, knob, knob_fields, parse_key_values,
                                 parse_sizes)
from voxseg.config.options import DEFAULT_MIN_ITERATIONS, PREPROCESS_KNOBS, TrainOptions, train_knobs, with_values
from voxseg.config.recipes import Recipe, list_recipes, load_recipe
from voxseg.config.run_plan import (AUGMENTATION_PRESETS, InferenceConfig, NetworkConfig, RunPlan, TrainConfig,
                                    augmentation_preset)

__all__ = ["AUGMENTATION_PRESETS", "DEFAULT_MIN_ITERATIONS", "GROUPS", "InferenceConfig", "Knob", "NetworkConfig",
           "PARSERS", "PREPROCESS_KNOBS", "Recipe", "RunPlan", "TrainConfig", "TrainOptions", "augmentation_preset", "interval",
           "knob", "knob_fields", "list_recipes", "load_recipe", "parse_key_values", "parse_sizes", "train_knobs", "with_values"]
