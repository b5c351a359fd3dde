// The storefront demo: real events to POST /events, live "Recommended for you" and "Customers also viewed".
"use strict";
(function () {
  const shop = document.getElementById("shop");
  if (!shop) return;
  const visitor = shop.dataset.visitor;
  const status = document.getElementById("shop-status");
  const CART = "fusionrec-cart:" + visitor;
  const cart = () => JSON.parse(localStorage.getItem(CART) || "[]");
  const showCart = () => { document.getElementById("cart-count").textContent = String(cart().length); };
  const q = encodeURIComponent;
  showCart();

  document.getElementById("new-visitor").addEventListener("click", () => {
    const id = "visitor-" + Math.random().toString(36).slice(2, 10);
    window.location.href = "/ui/shop?visitor=" + q(id);
  });

  async function titles(ids) {
    if (!ids.length) return {};
    const r = await fetch("/ui/api/items?ids=" + ids.map(q).join(","));
    return r.ok ? (await r.json()).items : {};
  }

  async function fill(list, items) {
    const info = await titles(items.map((it) => it.item_id));
    list.replaceChildren(...items.map((it) => {
      const li = document.createElement("li");
      li.className = "tile";
      li.dataset.item = it.item_id;
      const a = document.createElement("a");
      a.className = "product-link";
      a.dataset.item = it.item_id;
      a.href = "/ui/shop/p/" + q(it.item_id) + "?visitor=" + q(visitor);
      const t = document.createElement("span");
      t.className = "title";
      t.textContent = (info[it.item_id] && info[it.item_id].title) || it.item_id;
      a.append(t);
      const p = document.createElement("span");
      p.className = "price";
      const price = info[it.item_id] && info[it.item_id].price;
      p.textContent = price === null || price === undefined ? "" : Number(price).toFixed(2);
      const why = document.createElement("span");
      why.className = "muted why";
      const h = (it.reasons || []).find((r) => r.type === "history" || r.type === "fallback" || r.type === "similar_to");
      why.textContent = h ? h.text : "";
      li.append(a, p, why);
      return li;
    }));
    list.setAttribute("aria-busy", "false");
  }

  let version = 0;
  async function refresh() {
    const v = ++version;
    const recs = document.getElementById("recs");
    if (recs && visitor) {
      const r = await fetch("/recommendations/" + q(visitor) + "?k=8");
      if (r.ok && v === version) {
        await fill(recs, (await r.json()).items);
        recs.dataset.state = "ready";
        recs.dataset.version = String(v);
      }
    }
    const also = document.getElementById("also");
    const product = document.getElementById("product");
    if (also && product) {
      const r = await fetch("/items/" + q(product.dataset.item) + "/similar?k=6");
      if (r.ok && v === version) {
        await fill(also, (await r.json()).items);
        also.dataset.state = "ready";
      }
    }
  }

  async function event(item, behavior) {
    if (!visitor) { status.textContent = "Pick a visitor first."; return false; }
    const body = { user_id: visitor, item_id: item, behavior: behavior };
    const product = document.getElementById("product");
    if (product && product.dataset.item === item && product.dataset.price) body.price = Number(product.dataset.price);
    const r = await window.fusionrec.send("POST", "/events", body);
    if (!r.ok) {
      status.textContent = "The event was refused (" + r.status + "): " + ((r.body && r.body.detail) || "set the API key below");
      return false;
    }
    return r.body.accepted === 1;
  }

  // a click on a product tile is an event, then the navigation
  shop.addEventListener("click", async (e) => {
    const a = e.target.closest("a.product-link");
    if (!a || !visitor || e.ctrlKey || e.metaKey) return;
    e.preventDefault();
    await event(a.dataset.item, "click");
    window.location.href = a.href;
  });

  const product = document.getElementById("product");
  if (product) {
    const item = product.dataset.item;
    const words = { fav: "Saved to favourites", cart: "Added to the cart", buy: "Bought, thank you" };
    product.querySelectorAll("button[data-behavior]").forEach((b) => {
      b.addEventListener("click", async () => {
        const behavior = b.dataset.behavior;
        b.disabled = true;
        const ok = await event(item, behavior);
        b.disabled = false;
        if (!ok) return;
        if (behavior === "cart") localStorage.setItem(CART, JSON.stringify([...new Set([...cart(), item])]));
        if (behavior === "buy") localStorage.setItem(CART, JSON.stringify(cart().filter((x) => x !== item)));
        showCart();
        status.textContent = words[behavior] + ": " + item;
        await refresh();
      });
    });
    (async () => { if (visitor) await event(item, "view"); await refresh(); })();
  } else {
    refresh();
  }
})();
