/* livepulse host page: the "Who is watching" panel (insight group `portrait`).
 *
 * Self-contained, like questions.js: adds its labels to LivePulse.I18N and redraws the
 * panel #portrait whenever the page has rendered a newer insight (window.livepulseLast) or
 * the language changed. LivePulsePortrait.html(portrait) is the pure rendering (HTML string).
 */
(function () {
  "use strict";
  const LP = window.LivePulse;
  Object.assign(LP.I18N.en, {
    p_title: "Who is watching", p_hint: "viewers present now",
    p_none: "No viewer profiles yet", p_profiled: "{n} viewers profiled",
    p_segments: "Segments", p_intent: "Purchase intent", p_new_returning: "New / returning",
    p_categories: "Top categories", p_brands: "Top brands", p_bands: "Price bands",
    p_buyers: "Viewer → buyer", p_buyers_of: "{b} of {v} viewers bought",
    p_follows: "Follows / min", p_prev: "previous minute {n}",
    p_next: "Leaving viewers went to", p_next_none: "No moves seen yet",
    p_high: "High", p_medium: "Medium", p_low: "Low", p_unknown: "Unknown",
    p_new: "New", p_returning: "Returning",
    p_l_new: "New", p_l_active: "Active", p_l_engaged: "Engaged", p_l_loyal: "Loyal",
    p_l_at_risk: "At risk", p_l_dormant: "Dormant",
    p_t_new: "New", p_t_bargain_hunter: "Bargain hunter", p_t_big_spender: "Big spender",
    p_t_loyal_buyer: "Loyal buyer", p_t_high_intent: "High intent",
    p_t_engaged_viewer: "Engaged viewer", p_t_gifter: "Gifter", p_t_dormant: "Dormant",
    p_b_budget: "Budget", p_b_mid: "Mid", p_b_premium: "Premium", p_b_luxury: "Luxury",
  });
  Object.assign(LP.I18N.zh, {
    p_title: "观众画像", p_hint: "当前在线观众",
    p_none: "暂无观众画像", p_profiled: "已识别 {n} 位观众",
    p_segments: "人群构成", p_intent: "购买意向", p_new_returning: "新观众 / 回访",
    p_categories: "偏好品类", p_brands: "偏好品牌", p_bands: "价格带",
    p_buyers: "观看 → 购买", p_buyers_of: "{v} 位观众中 {b} 位下单",
    p_follows: "每分钟关注", p_prev: "上一分钟 {n}",
    p_next: "离开的观众去了", p_next_none: "暂无去向数据",
    p_high: "高", p_medium: "中", p_low: "低", p_unknown: "未知",
    p_new: "新观众", p_returning: "回访",
    p_l_new: "新用户", p_l_active: "活跃", p_l_engaged: "高参与", p_l_loyal: "忠诚",
    p_l_at_risk: "流失风险", p_l_dormant: "沉睡",
    p_t_new: "新用户", p_t_bargain_hunter: "价格敏感", p_t_big_spender: "高消费",
    p_t_loyal_buyer: "忠实买家", p_t_high_intent: "高意向",
    p_t_engaged_viewer: "深度观看", p_t_gifter: "送礼用户", p_t_dormant: "沉睡",
    p_b_budget: "平价", p_b_mid: "中端", p_b_premium: "高端", p_b_luxury: "奢侈",
  });

  function label(prefix, key) {
    const name = prefix + key;
    const text = LP.t(name);
    return text === name ? key : text;
  }

  function bars(rows, prefix) {
    const esc = LP.esc;
    return rows.map((r) => {
      const share = Math.max(0, Math.min(1, Number(r.share) || 0));
      const name = prefix ? label(prefix, r.key) : r.key;
      return `<div class="p-row" data-key="${esc(r.key)}"><span class="p-name">${esc(name)}</span>` +
        `<span class="p-bar"><i style="width:${(share * 100).toFixed(1)}%"></i></span>` +
        `<span class="p-val">${esc(r.count)} · ${esc(LP.format(share, "pct"))}</span></div>`;
    }).join("");
  }

  function block(title, body) {
    return body ? `<div class="subhead">${LP.esc(LP.t(title))}</div>${body}` : "";
  }

  /** The panel's body for an insight's `portrait` group (or nothing yet). */
  function html(p) {
    const esc = LP.esc;
    if (!p) return `<div class="empty">${esc(LP.t("p_none"))}</div>`;
    const total = (o) => Object.values(o || {}).reduce((a, b) => a + (Number(b) || 0), 0);
    const split = (o, keys) => {
      const n = total(o);
      return keys.map((k) => ({ key: k, count: o[k] || 0, share: n ? (o[k] || 0) / n : 0 }))
        .filter((r) => r.count > 0);
    };
    const buyers = p.viewer_to_buyer || {};
    const follows = p.follows || {};
    const next = (p.next_rooms || []).map((r) =>
      `<div class="p-row" data-room="${esc(r.room_id)}"><span class="p-name">` +
      `<a href="/rooms/${encodeURIComponent(r.room_id)}">${esc(r.room_id)}</a></span>` +
      `<span class="p-bar"><i style="width:${((Number(r.share) || 0) * 100).toFixed(1)}%"></i></span>` +
      `<span class="p-val">${esc(r.count)} · ${esc(LP.format(r.share || 0, "pct"))}</span></div>`).join("");
    return `<div class="stats">` +
      `<div class="stat"><div class="label">${esc(LP.t("p_buyers"))}</div>` +
      `<div class="value" id="p-buyer-rate">${esc(LP.format(buyers.rate || 0, "pct"))}</div>` +
      `<div class="sub">${esc(LP.t("p_buyers_of", { b: buyers.buyers || 0, v: buyers.viewers || 0 }))}</div></div>` +
      `<div class="stat"><div class="label">${esc(LP.t("p_follows"))}</div>` +
      `<div class="value" id="p-follows">${esc(follows.per_min || 0)}</div>` +
      `<div class="sub">${esc(LP.t("p_prev", { n: follows.prev_min || 0 }))}</div></div></div>` +
      block("p_new_returning", bars(split(p.new_vs_returning || {}, ["new", "returning"]), "p_")) +
      block("p_intent", bars(split(p.intent || {}, ["high", "medium", "low", "unknown"]), "p_")) +
      block("p_segments", bars(((p.segments || {}).lifecycle || []), "p_l_") +
        bars(((p.segments || {}).tags || []), "p_t_")) +
      block("p_categories", bars(p.top_categories || [])) +
      block("p_brands", bars(p.top_brands || [])) +
      block("p_bands", bars(p.price_bands || [], "p_b_")) +
      block("p_next", next || `<div class="empty">${esc(LP.t("p_next_none"))}</div>`) +
      `<p class="hint p-foot">${esc(LP.t("p_profiled", { n: p.profiled || 0 }))}</p>`;
  }

  const refresh = LP.panel("portrait-panel", "portrait", "portrait", html);
  window.LivePulsePortrait = { html, refresh };
})();
