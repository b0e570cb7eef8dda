"""Your own data as a :class:`~leaklab.data.Dataset`: from arrays or from a pandas DataFrame.

:meth:`Dataset.from_arrays` and :meth:`Dataset.from_pandas` turn records, labels,
sensitive attributes and user ids into a dataset that every entry point accepts in
place of a dataset name (:func:`leaklab.games.play`, :func:`leaklab.attacks.run_reconstruction`).
They coerce dtypes, code categorical values as ``0 .. K-1`` (keeping their names),
infer the games the data support, and refuse what would give meaningless results
(NaN, a sensitive attribute with a single value, labels that are not codes) with a
one-line error naming the column or argument.

>>> import numpy as np
>>> from leaklab.data import Dataset
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(200, 4)).astype("float32")
>>> x[:, 3] = rng.integers(0, 2, 200)          # a binary group, kept as a feature
>>> ds = Dataset.from_arrays(x, (x[:, 0] > 0).astype(int), sensitive={"group": 3}, name="toy")
>>> ds.info.games
('attribute', 'property', 'distribution', 'membership')
>>> ds.info.attributes, ds.info.attribute_features
({'group': ('group=0', 'group=1')}, {'group': 3})
"""
from __future__ import annotations

import math
from dataclasses import replace
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .info import DatasetInfo

__all__ = ["from_arrays", "from_pandas", "MAX_ATTRIBUTE_VALUES"]

#: A sensitive attribute with more distinct values than this is refused (bin it first).
MAX_ATTRIBUTE_VALUES = 32


# -- coercion helpers ---------------------------------------------------------------------------

def _to_numpy(name: str, value) -> np.ndarray:
    """``value`` (tensor, array, list, pandas Series) as a numpy array, or a TypeError naming ``name``."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if hasattr(value, "to_numpy"):                      # pandas Series / DataFrame
        return np.asarray(value.to_numpy())
    if isinstance(value, (str, bytes)) or np.isscalar(value) or value is None:
        raise TypeError(f"{name} must be an array, a tensor or a list, got {type(value).__name__}")
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} could not be read as an array ({exc})") from None


def _is_missing(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return np.isnan(a)
    if a.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and math.isnan(v)) for v in a.ravel()],
                        dtype=bool).reshape(a.shape)
    return np.zeros(a.shape, dtype=bool)


def _code(name: str, values: np.ndarray, *, strict_ints: bool) -> tuple[np.ndarray, tuple[str, ...], bool]:
    """Integer codes ``0 .. K-1`` for the 1-D ``values``, the names of the codes, and whether they were given as codes.

    Integers (and floats holding integers) are taken as codes and must be ``0 .. K-1``
    with every code present; with ``strict_ints=False`` other integer values are coded in
    sorted order instead. Booleans become 0/1; strings and other objects are coded in
    sorted order of their text.
    """
    if values.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per record), got shape {values.shape}")
    missing = _is_missing(values)
    if missing.any():
        raise ValueError(f"{name} has {int(missing.sum())} missing value(s) (NaN or None); "
                         "drop or fill those records first")
    if values.dtype.kind == "b":
        return values.astype(np.int64), ("False", "True"), False
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise ValueError(f"{name} contains inf values")
        if not np.all(values == np.round(values)):
            raise ValueError(f"{name} holds non-integer numbers (e.g. {values[values != np.round(values)][0]!r}); "
                             "expected codes 0..K-1 or category names (bin a continuous value first, "
                             "e.g. with pandas.cut)")
        values = values.astype(np.int64)
    if values.dtype.kind in "iu":
        uniq = np.unique(values)
        if strict_ints:
            if uniq[0] < 0 or not np.array_equal(uniq, np.arange(uniq[-1] + 1)):
                shown = ", ".join(str(int(u)) for u in uniq[:8]) + (", ..." if len(uniq) > 8 else "")
                raise ValueError(f"{name} must hold codes 0..K-1 with every code present, got values "
                                 f"{{{shown}}}; recode them (e.g. numpy.unique(..., return_inverse=True)) "
                                 "or pass category names")
            return values.astype(np.int64), tuple(str(int(u)) for u in uniq), True
        codes = np.searchsorted(uniq, values)
        return codes.astype(np.int64), tuple(str(int(u)) for u in uniq), False
    if values.dtype.kind in "OUS" or values.dtype.kind == "T":
        text = np.array([str(v) for v in values.ravel()], dtype=object)
        uniq = sorted(set(text))
        index = {u: i for i, u in enumerate(uniq)}
        return np.array([index[t] for t in text], dtype=np.int64), tuple(uniq), False
    raise TypeError(f"{name} has dtype {values.dtype}, which cannot be coded as categories")


def _float_records(name: str, x: np.ndarray) -> torch.Tensor:
    if x.dtype.kind == "b":
        x = x.astype(np.float32)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype} (code text columns first, "
                        "or use Dataset.from_pandas, which does)")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        where = np.argwhere(bad)[0]
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or inf value(s), the first at index "
                         f"{tuple(int(i) for i in where)}; drop or fill them first")
    return torch.from_numpy(np.ascontiguousarray(x))


def _standardise(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(0, keepdim=True)
    std = x.std(0, unbiased=False, keepdim=True)
    return (x - mean) / torch.where(std > 0, std, torch.ones_like(std))


def _check_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    return name


def _games(modality: str, attributes: Mapping, has_users: bool) -> tuple[str, ...]:
    games = []
    if modality == "image":
        games.append("reconstruction")
    if attributes:
        games += ["attribute", "property", "distribution"]
    if has_users:
        games.append("user")
    games.append("membership")
    return tuple(games)


def _attribute(name: str, values: np.ndarray, n: int, *, strict_ints: bool) -> tuple[torch.Tensor, tuple[str, ...]]:
    if values.shape[:1] != (n,):
        raise ValueError(f"sensitive attribute {name!r} has {values.shape[0] if values.ndim else 0} "
                         f"values, x has {n} records")
    codes, names, given_as_codes = _code(f"sensitive attribute {name!r}", values, strict_ints=strict_ints)
    if len(names) < 2:
        raise ValueError(f"sensitive attribute {name!r} has a single value ({names[0]!r}) in all {n} "
                         "records; an inference game needs at least two")
    if len(names) > MAX_ATTRIBUTE_VALUES:
        raise ValueError(f"sensitive attribute {name!r} has {len(names)} distinct values (at most "
                         f"{MAX_ATTRIBUTE_VALUES}); bin it first, e.g. pandas.cut or value > median")
    if given_as_codes:
        names = tuple(f"{name}={v}" for v in names)
    return torch.from_numpy(codes), names


# -- from arrays --------------------------------------------------------------------------------

def from_arrays(cls, x, y, *, sensitive=None, users=None, name: str = "custom", modality: str | None = None,
                num_classes: int | None = None, class_names: Sequence[str] | None = None,
                feature_names: Sequence[str] | None = None, standardize: bool = False,
                task: str = "", description: str = "") -> "Dataset":
    """A :class:`Dataset` from records ``x`` and labels ``y`` (arrays, tensors or lists).

    Called as ``Dataset.from_arrays(x, y, ...)``: ``cls`` is the dataset class (this
    module builds datasets without importing the registry that lists them).

    Parameters
    ----------
    x
        ``(N, F)`` tabular features, ``(N, C, H, W)`` images in ``[0, 1]`` or ``(N, H, W)``
        grey images (a channel axis is added). Converted to float32; NaN or inf is refused.
    y
        ``N`` class labels: integer codes ``0 .. K-1`` (every code present unless
        ``num_classes`` says there are more), booleans, or names (strings), which are
        coded in sorted order and kept in ``info.class_names``.
    sensitive
        Sensitive attributes: a dict ``name -> values`` (``N`` codes ``0 .. K-1``,
        booleans or names) or ``name -> column`` (an int: the feature column of tabular
        ``x`` that holds the attribute; its distinct values are coded in sorted order and
        the column stays a feature, so the informed adversary can play). A single array
        is taken as ``{"sensitive": values}``.
    users
        ``N`` user ids of any kind (coded ``0 .. U-1``); enables the user game.
    name, task, description
        How the dataset is named and described in results.
    modality
        ``"tabular"``, ``"image"`` or ``"sequence"`` (default: from the shape of ``x``).
    num_classes, class_names
        The class count (default: from ``y``) and names of the classes.
    feature_names
        Names of the tabular columns (kept in ``info.feature_names``).
    standardize
        Standardise each tabular feature to mean 0 and standard deviation 1.
    """
    name = _check_name(name)
    xa = _to_numpy("x", x)
    if xa.ndim < 2 or xa.shape[0] == 0:
        raise ValueError(f"x must hold at least one record with its features, shape (N, ...), got shape {xa.shape}")
    xt = _float_records("x", xa)
    n = xt.shape[0]
    if modality is None:
        modality = "tabular" if xt.ndim == 2 else "image"
    if modality not in ("tabular", "image", "sequence"):
        raise ValueError(f"unknown modality {modality!r}; choose from: image, sequence, tabular")
    if modality == "image":
        if xt.ndim == 3:
            xt = xt.unsqueeze(1)
        if xt.ndim != 4:
            raise ValueError(f"image records x must have shape (N, C, H, W) or (N, H, W), got {tuple(xa.shape)}")
        if xt.shape[1] not in (1, 3) and xt.shape[-1] in (1, 3):
            raise ValueError(f"image records x have shape {tuple(xt.shape)}, which looks channels-last; "
                             "pass x.transpose(0, 3, 1, 2) (N, C, H, W)")
        lo, hi = float(xt.min()), float(xt.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"image records x must hold values in [0, 1], got [{lo:g}, {hi:g}]"
                             + ("; divide 8-bit images by 255" if hi <= 255 and lo >= 0 else ""))
        if standardize:
            raise ValueError("standardize applies to tabular features, not to images in [0, 1]")
    elif modality == "tabular" and xt.ndim != 2:
        raise ValueError(f"tabular records x must have shape (N, F), got {tuple(xa.shape)}")

    ya = _to_numpy("y", y)
    if ya.ndim != 1 or ya.shape[0] != n:
        raise ValueError(f"y must hold one label per record ({n}), got shape {ya.shape}")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        codes, names, as_codes = _code("y", ya, strict_ints=False)   # NaN, fractions, text
        if ya.dtype.kind in "iuf":
            codes, as_codes = ya.astype(np.int64), True
            if codes.min() < 0 or codes.max() >= num_classes:
                raise ValueError(f"y must hold codes in [0, {num_classes - 1}] (num_classes={num_classes}), "
                                 f"got values in [{int(codes.min())}, {int(codes.max())}]")
        elif len(names) > num_classes:
            raise ValueError(f"y has {len(names)} classes, more than num_classes={num_classes}")
        k = num_classes
    else:
        codes, names, as_codes = _code("y", ya, strict_ints=True)
        k = len(names)
    if k < 2:
        raise ValueError(f"y has a single class ({names[0]!r}); a classifier needs at least two")
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if len(class_names) != k:
            raise ValueError(f"class_names must name {k} classes, got {len(class_names)}")
    elif not as_codes:
        class_names = tuple(names)
    else:
        class_names = ()
    yt = torch.from_numpy(np.asarray(codes, dtype=np.int64))

    if sensitive is None:
        sensitive = {}
    elif not isinstance(sensitive, Mapping):
        sensitive = {"sensitive": sensitive}
    attributes, attr_names, attr_features = {}, {}, {}
    for key, values in sensitive.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"sensitive attribute names must be non-empty strings, got {key!r}")
        if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
            col = int(values)
            if modality != "tabular":
                raise ValueError(f"sensitive[{key!r}] = {col} names a feature column, which only tabular "
                                 "records have; give the attribute's values instead")
            if not -xt.shape[1] <= col < xt.shape[1]:
                raise ValueError(f"sensitive[{key!r}] = {col} is not a column of x, which has "
                                 f"{xt.shape[1]} features")
            col %= xt.shape[1]
            vals = xt[:, col].numpy()
            attributes[key], names = _attribute(key, vals, n, strict_ints=False)
            attr_names[key] = tuple(f"{key}={v}" for v in names)
            attr_features[key] = col
        else:
            attributes[key], attr_names[key] = _attribute(key, _to_numpy(f"sensitive[{key!r}]", values), n,
                                                          strict_ints=True)

    user_codes = None
    if users is not None:
        ua = _to_numpy("users", users)
        if ua.ndim != 1 or ua.shape[0] != n:
            raise ValueError(f"users must hold one id per record ({n}), got shape {ua.shape}")
        uc, unames, _ = _code("users", ua, strict_ints=False)
        if len(unames) < 2:
            raise ValueError(f"users holds a single user id ({unames[0]!r}); the user game needs at least two")
        user_codes = torch.from_numpy(uc)

    if feature_names is not None:
        feature_names = tuple(str(f) for f in feature_names)
        if modality != "tabular" or len(feature_names) != xt.shape[1]:
            raise ValueError(f"feature_names must name the {xt.shape[1] if xt.ndim == 2 else 0} columns of "
                             f"tabular x, got {len(feature_names)} names")
    if standardize:
        xt = _standardise(xt)
    info = DatasetInfo(
        name=name, modality=modality, task=task or "class label", num_classes=k,
        input_shape=tuple(int(s) for s in xt.shape[1:]), size=n, embedded=True,
        games=_games(modality, attributes, user_codes is not None),
        source="user data (Dataset.from_arrays)", description=description,
        attributes=attr_names, attribute_features=attr_features, has_users=user_codes is not None,
        class_names=class_names, feature_names=feature_names or (),
    )
    return cls(info, xt.contiguous(), yt, attributes, user_codes)


# -- from a pandas DataFrame --------------------------------------------------------------------

def _refuse_numbers_as_text(df, col: str) -> None:
    """A feature column of text whose values are (mostly) numbers: refused, instead of coding each number as a category.

    Numbers read as text (a CSV column with a stray ``"n/a"``, or read with ``dtype=str``)
    would become unordered category codes: ``"9"`` after ``"10"``, the distance between
    values lost. Every value a number: convert the column; a few that are not: fix them.
    """
    import pandas as pd

    s = df[col]
    if not (pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)) or s.isna().any():
        return
    text = s.astype(str).str.strip()
    num = pd.to_numeric(text, errors="coerce")
    ok = int(num.notna().sum())
    if ok == len(s):
        raise ValueError(f"feature column {col!r} holds numbers written as text (e.g. {text.iloc[0]!r}), which "
                         f"would be coded as unordered categories; convert it first: "
                         f"df[{col!r}] = pd.to_numeric(df[{col!r}]) (or df[{col!r}].astype('category') if the "
                         "numbers are names)")
    if ok * 2 > len(s):
        bad = text[num.isna()]
        raise ValueError(f"feature column {col!r} holds numbers and {len(bad)} text value(s) (e.g. "
                         f"{bad.iloc[0]!r} at index {bad.index[0]!r}), which would code every value as a category; "
                         f"fix or drop those rows, then df[{col!r}] = pd.to_numeric(df[{col!r}])")


def _column_codes(df, col: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """The numeric values of column ``col``: numbers as they are, categories coded 0..K-1 (with names)."""
    import pandas as pd

    s = df[col]
    if s.isna().any():
        raise ValueError(f"column {col!r} has {int(s.isna().sum())} missing value(s); drop or fill them "
                         "first (df.dropna() or df.fillna(...))")
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s.cat.codes.to_numpy().astype(np.int64), tuple(str(c) for c in s.cat.categories)
    if pd.api.types.is_bool_dtype(s):
        return s.to_numpy().astype(np.int64), ("False", "True")
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy().astype(np.float64), None
    if pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s):
        codes, names, _ = _code(f"column {col!r}", np.asarray(s.astype(str).to_numpy(), dtype=object),
                                strict_ints=False)
        return codes, names
    raise TypeError(f"column {col!r} has dtype {s.dtype}, which is neither numeric nor categorical; "
                    "convert or drop it first")


def from_pandas(cls, df, label: str, *, sensitive: str | Sequence[str] = (), users: str | None = None,
                standardize: bool = True, keep_sensitive: bool = True, features: Sequence[str] | None = None,
                name: str = "custom", task: str = "", description: str = "") -> "Dataset":
    """A tabular :class:`Dataset` from a pandas DataFrame: one row per record.

    Called as ``Dataset.from_pandas(df, label, ...)`` (``cls`` is the dataset class).

    ``label`` names the class column (categories, booleans, strings, or integer codes
    ``0 .. K-1``); ``sensitive`` the sensitive attribute column(s), each coded ``0 .. K-1``
    with its value names kept; ``users`` an optional column of user ids. The features are
    ``features`` (default: every other column); text, boolean and categorical columns are
    coded ``0 .. K-1`` (names in ``info.categories``), numbers kept, and all of them
    standardised to mean 0, standard deviation 1 unless ``standardize=False``. A sensitive
    column stays among the features unless ``keep_sensitive=False`` (its column index is in
    ``info.attribute_features``, so the informed adversary can play the attribute game).

    >>> import pandas as pd
    >>> from leaklab.data import Dataset
    >>> df = pd.DataFrame({"age": [30, 41, 52, 63] * 10, "sex": ["F", "M"] * 20,
    ...                    "smoker": [True, False, False, True] * 10, "ill": ["no", "yes"] * 20})
    >>> ds = Dataset.from_pandas(df, label="ill", sensitive="sex", name="clinic")
    >>> ds.info.attributes, ds.info.attribute_features, ds.info.class_names
    ({'sex': ('F', 'M')}, {'sex': 1}, ('no', 'yes'))
    """
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        raise TypeError("Dataset.from_pandas needs pandas (pip install pandas)") from None
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError("df has no rows")
    columns = [str(c) for c in df.columns]
    if len(set(columns)) != len(columns):
        raise ValueError("df has duplicate column names")
    df = df.set_axis(columns, axis=1)

    def known(what: str, col) -> str:
        if not isinstance(col, str):
            raise TypeError(f"{what} must be a column name (a string), got {type(col).__name__}")
        if col not in df.columns:
            raise ValueError(f"{what} column {col!r} is not in df; its columns: {', '.join(columns)}")
        return col

    label = known("label", label)
    sens = [sensitive] if isinstance(sensitive, str) else list(sensitive or ())
    sens = [known("sensitive", c) for c in sens]
    if len(set(sens)) != len(sens):
        raise ValueError(f"sensitive names a column twice: {sens}")
    if label in sens:
        raise ValueError(f"column {label!r} cannot be both the label and a sensitive attribute")
    if users is not None:
        users = known("users", users)
        if users == label or users in sens:
            raise ValueError(f"column {users!r} cannot be the users column and the label or a sensitive attribute")
    if features is None:
        feats = [c for c in columns if c != label and c != users and (keep_sensitive or c not in sens)]
    else:
        if isinstance(features, str):
            raise TypeError("features must be a list of column names, got a string")
        feats = [known("feature", c) for c in features]
        for bad in (label, users):
            if bad is not None and bad in feats:
                raise ValueError(f"column {bad!r} cannot be a feature and the label or users column")
    if not feats:
        raise ValueError("no feature columns are left besides the label, users and sensitive columns")

    x_cols, categories = [], {}
    for c in feats:
        _refuse_numbers_as_text(df, c)
        vals, names = _column_codes(df, c)
        x_cols.append(vals.astype(np.float32))
        if names is not None:
            categories[c] = names
    x = np.stack(x_cols, 1)
    y_vals = df[label]
    if y_vals.isna().any():
        raise ValueError(f"label column {label!r} has {int(y_vals.isna().sum())} missing value(s); "
                         "drop those rows first")
    if isinstance(y_vals.dtype, pd.CategoricalDtype):
        y_arr = np.asarray(y_vals.astype(str).to_numpy(), dtype=object)
    elif pd.api.types.is_object_dtype(y_vals) or pd.api.types.is_string_dtype(y_vals):
        y_arr = np.asarray(y_vals.astype(str).to_numpy(), dtype=object)
    else:
        y_arr = y_vals.to_numpy()
    coded = {}
    for c in sens:
        s = df[c]
        if s.isna().any():
            raise ValueError(f"sensitive column {c!r} has {int(s.isna().sum())} missing value(s); "
                             "drop or fill them first")
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            v = s.to_numpy()
            uniq = np.unique(v)     # numbers are categories here, in numeric order, named "col=value"
            coded[c] = (np.searchsorted(uniq, v), tuple(f"{c}={u:g}" for u in uniq))
        else:
            vals, names = _column_codes(df, c)
            coded[c] = (vals.astype(np.int64), names)
    sens_values = {}
    for c, (codes, names) in coded.items():
        sens_values[c] = np.asarray([names[i] for i in codes], dtype=object)
    ds = from_arrays(cls, x, y_arr, sensitive=sens_values, users=None if users is None else df[users].to_numpy(),
                     name=name, modality="tabular", feature_names=feats, standardize=standardize,
                     task=task or label, description=description)
    # keep the value order of each sensitive column (numeric or categorical), not the sorted text
    attributes = {c: torch.from_numpy(np.asarray(codes, dtype=np.int64)) for c, (codes, _) in coded.items()}
    attr_names = {c: names for c, (_, names) in coded.items()}
    attr_features = {c: feats.index(c) for c in sens if c in feats}
    info = replace(ds.info, attributes=attr_names, attribute_features=attr_features, categories=categories,
                   source="user data (Dataset.from_pandas)")
    return cls(info, ds.x, ds.y, attributes, ds.users)
