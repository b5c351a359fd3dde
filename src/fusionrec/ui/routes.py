"""The dashboard's pages and JSON endpoints under /ui: server-rendered Jinja2 plus a little JavaScript.

Everything here reads. The storefront's clicks, favourites, carts and purchases go through the API's
own `POST /events`, and the admin buttons through `POST /admin/retrain` and `DELETE /users/{id}`,
so the API key rules apply to them exactly as to any other client.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from fusionrec.serving.schemas import MAX_ID
from fusionrec.ui.queries import DashboardData

__all__ = ["mount_ui", "build_router"]

HERE = Path(__file__).parent
PER_PAGE = 25
MAX_PAGE = 100_000

Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="page number, from 1")]
SearchText = Annotated[str | None, Query(max_length=MAX_ID)]


def _fmt_int(n: Any) -> str:
    return f"{int(n):,}" if n is not None else "-"


def _fmt_num(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{float(x):.{digits}f}"


def _fmt_pct(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{100.0 * float(x):.{digits}f}%"


def _templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters.update(int=_fmt_int, num=_fmt_num, pct=_fmt_pct, q=lambda s: quote(str(s), safe=""))
    t.env.globals["urlencode"] = urlencode
    return t


def _pages(page: int, total: int, per_page: int, base: str, params: dict[str, Any]) -> dict[str, Any]:
    """Pager links for a server-side paginated table (page numbers from 1)."""
    n = max(1, math.ceil(total / per_page))
    keep = {k: v for k, v in params.items() if v not in (None, "")}

    def link(p: int) -> str:
        return f"{base}?{urlencode({**keep, 'page': p})}"

    return {"page": page, "pages": n, "total": total, "prev": link(page - 1) if page > 1 else None,
            "next": link(page + 1) if page < n else None}


def build_router(data: DashboardData) -> APIRouter:
    templates = _templates()
    router = APIRouter(prefix="/ui", include_in_schema=False)
    state = data.state

    def render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        model = state.current
        ctx.setdefault("model_version", model.version if model else None)
        return templates.TemplateResponse(request, name, ctx, status_code=status_code)

    def not_found(request: Request, what: str, back: str, back_label: str) -> HTMLResponse:
        return render(request, "not_found.html", status_code=404, active="", title="Not found", what=what,
                      back=back, back_label=back_label)

    # -- pages ----------------------------------------------------------------------------------
    @router.get("", response_class=HTMLResponse)
    @router.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        return render(request, "overview.html", active="overview", title="Overview", o=data.overview())

    @router.get("/models", response_class=HTMLResponse)
    def models(request: Request) -> HTMLResponse:
        return render(request, "models.html", active="models", title="Models", m=data.models())

    @router.get("/users", response_class=HTMLResponse, response_model=None)
    def users(request: Request, q: SearchText = None, page: Page = 1) -> Response:
        if q and q.strip():
            return RedirectResponse(f"/ui/users/{quote(q.strip(), safe='')}", status_code=303)
        rows, total = data.user_list(page - 1, PER_PAGE)
        return render(request, "users.html", active="users", title="User inspector", rows=rows,
                      pg=_pages(page, total, PER_PAGE, "/ui/users", {}))

    @router.get("/users/{user_id}", response_class=HTMLResponse)
    def user(request: Request, user_id: str, page: Page = 1) -> HTMLResponse:
        u = data.user(user_id, page - 1, 50) if len(user_id) <= MAX_ID else None
        if u is None:
            return not_found(request, f"No user {user_id!r}: neither the event store nor the model knows them.",
                             "/ui/users", "back to the user inspector")
        return render(request, "user.html", active="users", title=f"User {user_id}", u=u,
                      pg=_pages(page, u["n_events"], 50, f"/ui/users/{quote(user_id, safe='')}", {}))

    @router.get("/items", response_class=HTMLResponse)
    def items(request: Request, q: SearchText = None, category: SearchText = None, page: Page = 1) -> HTMLResponse:
        rows, total = data.item_list(page - 1, PER_PAGE, q=q or None, category=category or None)
        return render(request, "items.html", active="items", title="Items", rows=rows, q=q or "",
                      category=category or "", categories=data.categories(),
                      pg=_pages(page, total, PER_PAGE, "/ui/items", {"q": q, "category": category}))

    @router.get("/items/{item_id}", response_class=HTMLResponse)
    def item(request: Request, item_id: str) -> HTMLResponse:
        it = data.item(item_id[:MAX_ID])
        if it is None:
            return not_found(request, f"No item {item_id!r} in the catalogue or the event store.", "/ui/items",
                             "back to the items")
        return render(request, "item.html", active="items", title=f"Item {item_id}", it=it)

    @router.get("/experiments", response_class=HTMLResponse)
    def experiments(request: Request) -> HTMLResponse:
        return render(request, "experiments.html", active="experiments", title="Experiments",
                      reports=data.experiment_reports())

    # -- the storefront ---------------------------------------------------------------------------
    @router.get("/shop", response_class=HTMLResponse)
    def shop(request: Request, visitor: SearchText = None) -> HTMLResponse:
        return render(request, "shop_home.html", active="shop", title="Storefront", visitor=visitor or "",
                      categories=_top_categories(data.categories()), sample_users=data.sample_users())

    @router.get("/shop/c/{category:path}", response_class=HTMLResponse)
    def shop_category(request: Request, category: str, visitor: SearchText = None, page: Page = 1) -> HTMLResponse:
        rows, total = data.item_list(page - 1, 12, category=category[:MAX_ID])
        if total == 0:
            return not_found(request, f"No category {category!r} in the catalogue.", "/ui/shop", "back to the shop")
        subs = [(c, n) for c, n in data.categories() if c.startswith(category.rstrip("/") + "/")]
        return render(request, "shop_category.html", active="shop", title=f"Shop: {category}", visitor=visitor or "",
                      category=category, rows=rows, subs=subs,
                      pg=_pages(page, total, 12, f"/ui/shop/c/{category}", {"visitor": visitor}))

    @router.get("/shop/p/{item_id}", response_class=HTMLResponse)
    def shop_product(request: Request, item_id: str, visitor: SearchText = None) -> HTMLResponse:
        found = data.titles([item_id[:MAX_ID]]).get(item_id)
        if found is None:
            return not_found(request, f"No product {item_id!r} in the catalogue.", "/ui/shop", "back to the shop")
        return render(request, "shop_product.html", active="shop", title=found.get("title") or item_id,
                      visitor=visitor or "", p={"item_id": item_id, **found})

    # -- JSON for the pages' live parts -------------------------------------------------------------
    @router.get("/api/live")
    def live() -> dict[str, Any]:
        data.experiment_reports()  # the overview polls this: the experiments' course is sampled meanwhile
        return data.live.snapshot()

    @router.get("/api/overview")
    def overview_json() -> dict[str, Any]:
        return data.overview()

    @router.get("/api/models")
    def models_json() -> dict[str, Any]:
        return data.models()

    @router.get("/api/users")
    def users_json(page: Page = 1) -> dict[str, Any]:
        rows, total = data.user_list(page - 1, PER_PAGE)
        return {"page": page, "total": total, "users": [{"user_id": u, "events": n} for u, n in rows]}

    @router.get("/api/users/{user_id}")
    def user_json(user_id: str, page: Page = 1) -> dict[str, Any]:
        u = data.user(user_id, page - 1, 50) if len(user_id) <= MAX_ID else None
        if u is None:
            raise HTTPException(404, f"no user {user_id!r}: neither the event store nor the model knows them")
        return u

    @router.get("/api/items")
    def items_json(ids: Annotated[str | None, Query(max_length=100 * (MAX_ID + 1))] = None, q: SearchText = None,
                   category: SearchText = None, page: Page = 1) -> dict[str, Any]:
        if ids is not None:
            return {"items": data.titles([i for i in ids.split(",") if i][:100])}
        rows, total = data.item_list(page - 1, PER_PAGE, q=q or None, category=category or None)
        return {"page": page, "total": total, "items": rows}

    @router.get("/api/items/{item_id}")
    def item_json(item_id: str) -> dict[str, Any]:
        it = data.item(item_id[:MAX_ID])
        if it is None:
            raise HTTPException(404, f"no item {item_id!r} in the catalogue or the event store")
        return it

    @router.get("/api/experiments")
    def experiments_json() -> list[dict[str, Any]]:
        return data.experiment_reports()

    return router


def _top_categories(cats: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Top-level categories with their item counts ("home/kitchen" counts under "home")."""
    tops: dict[str, int] = {}
    for c, n in cats:
        top = c.split("/")[0]
        tops[top] = tops.get(top, 0) + n
    return sorted(tops.items())


def mount_ui(app: FastAPI, state: Any) -> DashboardData:
    """Serve the dashboard and storefront at /ui on `app` (static files at /ui/static); returns its data."""
    data = DashboardData(state)
    app.state.dashboard = data
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
    app.include_router(build_router(data))

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)

    return data
