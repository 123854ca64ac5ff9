"""Byte accounting of an artifact (`liftexport inspect`): what every tensor costs and the effective
bits per weight of the decoder's linear layers, every overhead included."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import FormatError


def inspect_container(path: str | Path) -> dict:
    from .formats.container import read_container, read_header

    path = Path(path)
    header, meta = read_header(path)
    ir = read_container(path)  # full validation
    with open(path, "rb") as f:
        header_bytes = 8 + int.from_bytes(f.read(8), "little")
    quant = json.loads(meta["quant"])
    rows = []
    cats = {"codes": 0, "row_scales": 0, "bias": 0, "transforms": 0, "kept": 0, "tokenizer": 0}
    code_pad_bits = 0
    input_pad_bits = 0
    weights = 0
    rtn_unpacked_bits = 0  # RTN codes are stored one per byte; their logical size is `bits` per weight
    for name, info in header.items():
        nbytes = info["data_offsets"][1] - info["data_offsets"][0]
        kind, rest = name.split(".", 1)
        row = {"tensor": name, "dtype": info["dtype"], "shape": info["shape"], "bytes": nbytes}
        if kind == "tf":
            cats["transforms"] += nbytes
            key = rest.rsplit(".", 1)[0]
            t = quant["transforms"][key]
            row.update(kind="transform", D=t["D"], d=t["d"], bits=round(t["D"] / t["d"], 4))
        elif kind == "lin":
            lname, part = rest.rsplit(".", 1)
            lin = quant["linears"][lname]
            if part in ("codes", "q"):
                cats["codes"] += nbytes
                if lin["kind"] == "lift":
                    t = quant["transforms"][lin["transform"]]
                    K = t["n1"] * t["n2"] // t["d"] * t["D"]
                    code_pad_bits += nbytes * 8 - lin["out_features"] * K
                    input_pad_bits += lin["out_features"] * (t["n1"] * t["n2"] - t["in_features"]) // t["d"] * t["D"]
                    weights += lin["out_features"] * t["in_features"]
                    row.update(kind="lift-codes", D=t["D"], d=t["d"], bits=round(t["D"] / t["d"], 4),
                               weights=lin["out_features"] * t["in_features"])
                else:
                    weights += lin["out_features"] * lin["in_features"]
                    rtn_unpacked_bits += lin["out_features"] * lin["in_features"] * (8 - lin["bits"])
                    row.update(kind=f"rtn{lin['bits']}-codes", bits=lin["bits"],
                               weights=lin["out_features"] * lin["in_features"])
            elif part == "bias":
                cats["bias"] += nbytes
                row.update(kind="bias")
            else:
                cats["row_scales"] += nbytes
                row.update(kind="scales")
        elif kind == "kept":
            cats["kept"] += nbytes
            row.update(kind="kept")
        elif kind == "tokenizer":
            cats["tokenizer"] += nbytes
            row.update(kind="tokenizer")
        else:
            raise FormatError(f"{path}: tensor {name} of unknown kind")
        rows.append(row)
    total = header_bytes + sum(r["bytes"] for r in rows)
    size = path.stat().st_size
    linear_bytes = cats["codes"] + cats["row_scales"] + cats["bias"] + cats["transforms"]
    eff = (8 * linear_bytes - rtn_unpacked_bits) / weights if weights else 0.0
    item = {k: round(8 * v / weights, 5) for k, v in cats.items() if k in ("codes", "row_scales", "bias", "transforms")} if weights else {}
    if weights:
        item["of_codes:row_byte_padding"] = round(code_pad_bits / weights, 5)
        item["of_codes:input_padding"] = round(input_pad_bits / weights, 5)
        if rtn_unpacked_bits:
            item["codes"] = round((8 * cats["codes"] - rtn_unpacked_bits) / weights, 5)
            item["of_codes:rtn_stored_unpacked(not counted)"] = round(rtn_unpacked_bits / weights, 5)
    return {
        "file": str(path), "file_bytes": size, "accounted_bytes": total, "header_bytes": header_bytes,
        "categories": cats, "linear_weights": weights, "effective_bits": round(eff, 5),
        "effective_bits_items": item, "meta": ir.meta, "tensors": sorted(rows, key=lambda r: r["tensor"]),
    }
