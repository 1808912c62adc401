"""Configuration: the schema, the loader and the immutable model it produces."""

from provisiond.config.load import load_config, sample_config
from provisiond.config.schema import ConfigError
from provisiond.model.settings import Config, ServiceSpec, StateAttributes, Step

__all__ = ["Config", "ConfigError", "ServiceSpec", "StateAttributes", "Step", "load_config",
           "sample_config"]
