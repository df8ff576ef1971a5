"""`Spending`: the `max_credits` budget of a kernel, and what a task costs.

A task's cost comes from the `credit_costs` setting, else from what this directory learned:
the balance read just before and just after a submit (a submit is charged when it is
accepted) gives the price of that resolution. Learned prices are kept in
`output_dir/.credit-costs.json`, per API base URL (the emulator's prices are not the
service's) and with the time they were learned, and learned again when a budget is in
force and the price is more than a day old (two credit calls for that task).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.errors import BudgetExceededError

COSTS_FILE = ".credit-costs.json"
RELEARN_AFTER = 24 * 3600.0


class Spending:
    """Credits spent since the budget was (re)set, checked before every paid submit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards cap and spent
        self.cap: float | None = None
        self.spent = 0.0

    def start(self, cap: float | None) -> None:
        """A new budget from now (None: no cap); what was spent before no longer counts."""
        with self._lock:
            self.cap, self.spent = cap, 0.0

    @property
    def left(self) -> float | None:
        with self._lock:
            return None if self.cap is None else max(0.0, self.cap - self.spent)

    def check(self, costs: Sequence[float | None], what: str) -> None:
        """Refuse (`BudgetExceededError`) when these known costs would pass the budget; nothing is sent."""
        with self._lock:
            if self.cap is None:
                return
            known = sum(c for c in costs if c is not None)
            left = self.cap - self.spent
            if self.spent + known > self.cap or (known == 0 and left <= 0):
                raise BudgetExceededError(
                    f"{what} would cost {known:g} credits; {max(left, 0):g} of the {self.cap:g}-credit budget "
                    "are left; nothing was sent"
                )

    def charge(self, cost: float | None) -> None:
        if cost is None:
            return
        with self._lock:
            self.spent += cost

    def summary(self, costs: Sequence[float | None]) -> str:
        """`they would cost 24 credits; 76 of the 100-credit budget left` (or what is known of it)."""
        total = sum(c for c in costs if c is not None)
        unknown = sum(1 for c in costs if c is None)
        text = f"they would cost {total:g} credits" + (f" (+{unknown} of unknown price)" if unknown else "")
        left = self.left
        if left is not None:
            text += f"; {left:g} of the {self.cap:g}-credit budget left"
        return text


class Prices:
    """What a task of each resolution costs at one API: the setting, else what was learned here."""

    def __init__(self, configured: Mapping[str, float], output_dir: Path, api: str = "") -> None:
        self.configured = {k.upper(): float(v) for k, v in configured.items()}
        self.path = output_dir / COSTS_FILE
        self.api = api.rstrip("/")

    def cost(self, resolution: str) -> float | None:
        resolution = resolution.upper()
        if resolution in self.configured:
            return self.configured[resolution]
        entry = self._learned().get(resolution)
        return float(entry["cost"]) if entry else None

    def needs_learning(self, resolution: str) -> bool:
        """True when neither the setting nor a recent measurement gives the price."""
        resolution = resolution.upper()
        if resolution in self.configured:
            return False
        entry = self._learned().get(resolution)
        return entry is None or time.time() - float(entry.get("t", 0)) > RELEARN_AFTER

    def learn(self, resolution: str, before: float, after: float) -> float | None:
        """Keep `before - after` as the price of `resolution` (when it is a plausible price)."""
        cost = before - after
        if not cost > 0:
            return None  # a refund or a top-up in between: nothing learned
        every = self._file()
        every.setdefault(self.api, {})[resolution.upper()] = {"cost": cost, "t": round(time.time(), 3)}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(every, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only directory learns again next time
        return cost

    def _learned(self) -> dict[str, dict]:
        """This API's learned prices by resolution."""
        mine = self._file().get(self.api, {})
        return {k: v for k, v in mine.items() if isinstance(v, dict) and "cost" in v}

    def _file(self) -> dict[str, dict]:
        """{api: {resolution: {"cost", "t"}}}; anything else in the file is dropped (learned again)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {api: prices for api, prices in data.items() if isinstance(prices, dict) and "cost" not in prices}
