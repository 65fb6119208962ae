"""The catalog of what can be run: models, local operations, their parameters and prices.

A package by responsibility, each module importable on its own (no module here imports the package):

- `spec`: the types (ParamSpec, ModelSpec, Price, ...) and the shapes of ids and references;
- `builtin`: local operations, the local and simulated models; `replicate`, `fal`, `openai`, `elevenlabs`:
  each remote provider's models and how its adapter maps our params to its inputs;
- `retired`: models their provider shut down, refused with a message naming alternatives;
- `validation`: `check_params` and the wording of its messages; `pricing`: rough cost and time estimates;
- `file`: parsing catalog files and plugins' model lists; `catalog`: the `Catalog` object (models and
  operations) handed to the engine, worker, plan validation and API; `registry`: the process's default
  catalog, with what plugins and the catalog file (`REELFLOW_CATALOG_FILE`) add, built on first use.

The names below are the ones other modules import from `reelflow.providers.catalog`.
"""

from __future__ import annotations

from .builtin import (
    BUILTIN_MODELS,
    JOB_TYPES,
    MEDIA_INPUT_NOTE,
    OPEN_PROVIDERS,
    OPERATION_RULES,
    OPERATION_SPECS,
    OPERATIONS,
    RUN_INPUT,
    SIM_MAX_COST_USD,
    local_media_inputs,
    operations,
)
from .catalog import Catalog, ParamSchema, builtin_models
from .file import (
    FAL_CONVERTERS,
    INPUT_MAPPED_BY,
    NORMALISED_PARAMS,
    CatalogFileError,
    CatalogProblem,
    FileLimits,
    FileModel,
    FileParam,
    FileParamItem,
    FilePrice,
    FileRule,
    UserModel,
)
from .pricing import estimate_cost, estimate_seconds
from .registry import (
    check_job_params,
    default_catalog,
    get_model,
    input_names,
    install_model,
    known_providers,
    list_models,
    load_catalog_file,
    load_extensions,
    models_for_type,
    param_schema,
    parse_catalog_text,
    parse_model_entries,
    register_model,
    reset_extensions,
    set_default_catalog,
    unregister_model,
)
from .retired import RETIRED, Retirement, retired_message, retirement
from .spec import (
    ASPECT_RATIOS,
    MODEL_TYPES,
    REFERENCE_PATTERN,
    ModelSpec,
    OperationSpec,
    ParamRule,
    ParamSpec,
    ParamType,
    Price,
    is_http_url,
    is_model_id,
    is_reference,
    unescape,
)
from .validation import check_params, fmt_number, join_or, params_with_defaults, show, suggest

__all__ = [
    "ASPECT_RATIOS",
    "BUILTIN_MODELS",
    "FAL_CONVERTERS",
    "INPUT_MAPPED_BY",
    "JOB_TYPES",
    "MEDIA_INPUT_NOTE",
    "MODEL_TYPES",
    "NORMALISED_PARAMS",
    "OPEN_PROVIDERS",
    "OPERATIONS",
    "OPERATION_RULES",
    "OPERATION_SPECS",
    "REFERENCE_PATTERN",
    "RETIRED",
    "RUN_INPUT",
    "SIM_MAX_COST_USD",
    "Catalog",
    "CatalogFileError",
    "CatalogProblem",
    "FileLimits",
    "FileModel",
    "FileParam",
    "FileParamItem",
    "FilePrice",
    "FileRule",
    "ModelSpec",
    "OperationSpec",
    "ParamRule",
    "ParamSchema",
    "ParamSpec",
    "ParamType",
    "Price",
    "Retirement",
    "UserModel",
    "builtin_models",
    "check_job_params",
    "check_params",
    "default_catalog",
    "estimate_cost",
    "estimate_seconds",
    "fmt_number",
    "get_model",
    "input_names",
    "install_model",
    "is_http_url",
    "is_model_id",
    "is_reference",
    "join_or",
    "known_providers",
    "list_models",
    "load_catalog_file",
    "load_extensions",
    "local_media_inputs",
    "models_for_type",
    "operations",
    "param_schema",
    "params_with_defaults",
    "parse_catalog_text",
    "parse_model_entries",
    "register_model",
    "reset_extensions",
    "retired_message",
    "retirement",
    "set_default_catalog",
    "show",
    "suggest",
    "unescape",
    "unregister_model",
]
