"""Page styling and the small script that puts category descriptions on hover.

Gradio 6 takes css, head and theme in `launch()`, so app.py passes these there.
"""

from __future__ import annotations

import json

from guard.core.categories import Family, categories_for

CSS = """
.gl-banner {padding: 10px 14px; border-radius: 8px; margin: 4px 0; font-size: 0.95rem}
.gl-banner-tiny {background: #fff6db; border: 1px solid #e6c05c; color: #5a4300}
.gl-banner-error {background: #fdecec; border: 1px solid #e08a8a; color: #6b1111}
.gl-loaded {font-size: 0.8rem; color: var(--body-text-color-subdued); margin: 2px 0 6px}
.gl-turn {padding: 8px 10px !important; margin-bottom: 6px}
.gl-turn-head {display: flex; gap: 8px; align-items: center; font-size: 0.85rem}
.gl-role {font-weight: 600; padding: 1px 8px; border-radius: 10px}
.gl-role-user {background: #e3edff; color: #123c8c}
.gl-role-assistant {background: #e7f6ec; color: #145c2c}
.gl-judged {font-size: 0.75rem; color: #6b4e00; background: #fff1c2; padding: 0 6px;
  border-radius: 8px}
.gl-turn-text {white-space: pre-wrap; word-break: break-word; margin: 6px 2px 2px;
  font-size: 0.95rem}
.gl-muted {color: var(--body-text-color-subdued); font-size: 0.85rem}
.gl-summary {font-size: 0.85rem; color: var(--body-text-color-subdued)}
.gl-problem {margin-top: 4px; padding: 6px 10px; border-radius: 6px; background: #fff4e5;
  border: 1px solid #f0b46b; color: #6b3b00; font-size: 0.9rem}
.gl-empty {padding: 14px; border: 1px dashed var(--border-color-primary); border-radius: 8px;
  color: var(--body-text-color-subdued); text-align: center}
.gl-thumb button.gl-remove {min-width: 0}
.gl-results {display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 12px}
.gl-card {border-radius: 10px; padding: 12px 14px; border: 1px solid var(--border-color-primary);
  background: var(--block-background-fill)}
.gl-card-unsafe {border-left: 6px solid #d33}
.gl-card-safe {border-left: 6px solid #2a9d55}
.gl-card-title {font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.04em;
  color: var(--body-text-color-subdued)}
.gl-verdict {font-size: 1.8rem; font-weight: 700; margin: 2px 0}
.gl-verdict-unsafe {color: #c62828}
.gl-verdict-safe {color: #1e7d45}
.gl-cats {margin: 6px 0; padding-left: 18px}
.gl-row {display: flex; justify-content: space-between; margin-top: 6px; font-size: 0.9rem}
.gl-bar {position: relative; height: 12px; background: #e9ecef; border-radius: 6px;
  margin: 4px 0; overflow: visible}
.gl-bar-fill {height: 100%; border-radius: 6px}
.gl-bar-fill.gl-unsafe {background: #e05252}
.gl-bar-fill.gl-safe {background: #3bb273}
.gl-bar-mark {position: absolute; top: -3px; width: 2px; height: 18px; background: #222}
.gl-tag {font-size: 0.75rem; padding: 0 6px; border-radius: 8px; color: white}
.gl-tag.gl-unsafe {background: #d33}
.gl-tag.gl-safe {background: #2a9d55}
.gl-pg {width: 100%; border-collapse: collapse; margin-top: 6px; font-size: 0.88rem}
.gl-pg td, .gl-pg th {padding: 4px 6px; border-top: 1px solid var(--border-color-primary);
  vertical-align: top; text-align: left}
.gl-snippet {white-space: pre-wrap; word-break: break-word; max-width: 260px}
.gl-meta {margin-top: 8px; font-size: 0.8rem; color: var(--body-text-color-subdued)}
.gl-note {font-size: 0.88rem; margin: 4px 0}
.gl-legend td {padding: 3px 6px; vertical-align: top; font-size: 0.85rem}
.gl-custom {margin: 4px 0; padding-left: 18px; font-size: 0.9rem}
#gl-categories label.gl-disabled {opacity: 0.45}
.gl-explore {width: 100%; border-collapse: collapse; margin-top: 6px; font-size: 0.9rem}
.gl-explore td, .gl-explore th {padding: 4px 8px; border-top: 1px solid var(--border-color-primary);
  text-align: left; vertical-align: top}
.gl-explore tr.gl-flip td {background: #fff1c2; color: #3d2c00}
.gl-explore tr.gl-reference td {font-weight: 600}
.gl-explore td.gl-num {font-variant-numeric: tabular-nums; min-width: 90px}
.gl-explore-summary {font-weight: 600; margin: 4px 0}
.gl-bar-fill.gl-score {background: #4f6fd6}
.gl-bar-fill.gl-score-raw {background: #9aa9d8}
#gl-title h1 {margin: 0 0 2px}
#gl-title p {margin: 0}
.gl-signin-link {font-size: 0.85rem}
.gl-signin-link > button, .gl-signin-link .label-wrap {padding: 2px 6px !important;
  min-height: 0}
.gl-verdict-pg {font-size: 1.25rem}
.gl-plain {font-size: 0.92rem; margin: 6px 0; padding: 6px 10px; border-radius: 6px;
  background: #eef4ff; border: 1px solid #b9cdf2; color: #15356b}
.gl-more {margin-top: 6px; font-size: 0.88rem}
.gl-more summary {cursor: pointer; color: var(--body-text-color-subdued)}
.gl-stale {margin-bottom: 8px; padding: 8px 12px; border-radius: 8px; background: #fff4e5;
  border: 1px solid #f0b46b; color: #6b3b00; font-size: 0.92rem}
.gl-out-of-date {opacity: 0.5; filter: grayscale(0.7)}
.gl-fold summary {cursor: pointer; list-style: none}
.gl-fold summary::-webkit-details-marker {display: none}
.gl-fold[open] .gl-fold-start {display: none}
.gl-show-all {font-size: 0.82rem; color: #1d4ed8; text-decoration: underline}
#gl-role {padding: 0 !important}
#gl-composer-note:not(:has(.gl-problem)), #gl-kept-note:not(:has(.gl-problem)) {display: none}
#gl-workspace .gl-empty {padding: 8px}
@media (max-width: 700px) {
  .gl-banner {padding: 6px 10px; font-size: 0.85rem}
  #gl-title h1 {font-size: 1.5rem}
  .gl-results {grid-template-columns: 1fr}
}
"""


def head(family: Family | str = Family.LLAMA_GUARD_4) -> str:
    """A script that gives each category checkbox its description as a tooltip.

    The descriptions are keyed by code, and codes mean different categories across families
    (Llama Guard 2's S5 is Specialized Advice, Llama Guard 4's is Defamation), so the script
    must carry the loaded model's table.
    """
    descriptions = {c.code: f"{c.card_name}: {c.description}" for c in categories_for(family)}
    data = json.dumps(descriptions).replace("</", "<\\/")
    return """<script>
(() => {
  const DESC = __DESC__;
  function tag() {
    document.querySelectorAll('#gl-categories label').forEach((label) => {
      const text = (label.textContent || '').trim();
      const code = (text.match(/^S\\d+/) || [])[0];
      if (!code || !DESC[code]) return;
      const off = text.includes('off while');
      const title = off ? 'Left out of the prompt while the conversation has images: ' +
        'code interpreter abuse is judged on text only. ' + DESC[code] : DESC[code];
      if (label.title !== title) label.title = title;
      label.classList.toggle('gl-disabled', off);
      const box = label.querySelector('input');
      if (box && box.disabled !== off) box.disabled = off;
    });
  }
  new MutationObserver(tag).observe(document.documentElement, {subtree: true, childList: true,
    characterData: true});
  document.addEventListener('DOMContentLoaded', tag);
})();
</script>""".replace("__DESC__", data) + SHORTCUTS_SCRIPT


# Review shortcuts (listed where they work): Alt plus a key clicks a button found by elem_id;
# the label keys and Ctrl+Enter act on the label form in use (the focused one, else the only one
# on the screen; when unclear, nothing changes and a hint says why); Enter in the message box
# adds the turn.
# `code` rather than `key`, because Alt+R types a character on macOS keyboards.
SHORTCUTS_SCRIPT = r"""<script>
(() => {
  const BUTTONS = {KeyR: '#gl-run', KeyN: '#gl-next-example', KeyP: '#gl-prev-example',
                   KeyQ: '#gl-queue-start'};
  // Keys that act on one label form: its own buttons, never another form's.
  const FORM_BUTTONS = {KeyS: ['#gl-review', '#gl-save-label'],
                        KeyK: ['#gl-queue', '#gl-queue-skip'],
                        KeyB: ['#gl-queue', '#gl-queue-back']};
  const CHOICES = {KeyW: 'Wrong', KeyG: 'Right'};  // "The model was" in the Review panel
  const LABELS = {KeyU: 'unsafe', KeyF: 'safe'};
  // queue, Labeled examples, Review: each form with its submit button
  const SUBMIT = {'gl-queue': '#gl-queue-submit', 'gl-open': '#gl-edit-save',
                  'gl-review': '#gl-save-label'};
  const shown = (el) => el && el.offsetParent !== null;
  const inView = (el) => {
    if (!shown(el)) return false;
    const r = el.getBoundingClientRect();
    return r.bottom > 0 && r.top < window.innerHeight && r.height > 0;
  };
  // A form counts where its label choice is: shown and on the screen.
  const choice = (f) => f.querySelector('[id$="-label"]');
  const forms = () => Object.keys(SUBMIT).map((id) => document.getElementById(id))
    .filter((f) => f && shown(choice(f)));
  function hint(text) {
    let box = document.getElementById('gl-shortcut-hint');
    if (!box) {
      box = document.createElement('div');
      box.id = 'gl-shortcut-hint';
      box.setAttribute('role', 'status');
      box.style.cssText = 'position:fixed;bottom:16px;right:16px;z-index:1000;max-width:420px;' +
        'padding:8px 12px;border-radius:8px;background:#fff4e5;border:1px solid #f0b46b;' +
        'color:#6b3b00;font-size:0.9rem;box-shadow:0 2px 8px rgba(0,0,0,.15)';
      document.body.appendChild(box);
    }
    box.textContent = text;
    box.style.display = 'block';
    clearTimeout(box.timer);
    box.timer = setTimeout(() => { box.style.display = 'none'; }, 5000);
  }
  // The form the reviewer is using: the one holding the focus, if it is on the screen; else
  // the only one on the screen. None (and a hint) when that is not clear: a shortcut never
  // changes a form out of view.
  function activeForm() {
    const open = forms();
    const focused = document.activeElement && open.find((f) => f.contains(document.activeElement));
    if (focused && inView(choice(focused))) return focused;
    const visible = open.filter((f) => inView(choice(f)));
    if (visible.length === 1) return visible[0];
    hint(visible.length ? 'Shortcut not applied: ' + visible.length + ' label forms are on ' +
         'the screen. Click into the one you mean (or scroll the other away), then press it ' +
         'again.' : 'Shortcut not applied: no label form is on the screen. Scroll to the form ' +
         'you mean, then press it again.');
    return null;
  }
  function pick(box, part, text) {
    const label = [...box.querySelectorAll('[id$="' + part + '"] label')]
      .find((l) => shown(l) && l.textContent.trim().split(' ')[0] === text);
    if (label) label.click();
    return label;
  }
  document.addEventListener('keydown', (event) => {
    const inText = event.target.closest && event.target.closest('#gl-text');
    if (inText && event.key === 'Enter' && event.shiftKey && !event.ctrlKey &&
        !event.metaKey && !event.altKey) {
      // A new line: the browser's own, kept from Gradio's textbox, which would submit.
      event.stopPropagation();
      return;
    }
    if (inText && event.key === 'Enter' && !event.shiftKey && !event.ctrlKey &&
        !event.metaKey && !event.altKey) {
      const add = document.querySelector('#gl-add');
      if (shown(add)) { event.preventDefault(); event.stopPropagation(); add.click(); }
      return;
    }
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      // Before the focused element sees it: Gradio's checkboxes toggle on Enter.
      event.preventDefault(); event.stopPropagation();
      const box = activeForm();
      const submit = box && document.querySelector(SUBMIT[box.id]);
      if (shown(submit)) submit.click();
      return;
    }
    if (!event.altKey || event.ctrlKey || event.metaKey) return;
    const code = event.code;
    if (BUTTONS[code]) {
      const target = document.querySelector(BUTTONS[code]);
      if (shown(target)) { event.preventDefault(); target.click(); }
      return;
    }
    const formKey = LABELS[code] || CHOICES[code] || FORM_BUTTONS[code] || /^Digit\d$/.test(code);
    if (!formKey) return;
    event.preventDefault();
    const box = activeForm();
    if (!box) return;
    if (FORM_BUTTONS[code]) {
      const [owner, button] = FORM_BUTTONS[code];
      const target = document.querySelector(button);
      if ('#' + box.id === owner && shown(target)) target.click();
      else hint('Shortcut not applied: it belongs to another form than the one you are using.');
      return;
    }
    if (CHOICES[code]) {
      if (box.id === 'gl-review') pick(box, '-right', CHOICES[code]);
      else hint('Shortcut not applied: "the model was" is in Review this result.');
      return;
    }
    if (LABELS[code]) { pick(box, '-label', LABELS[code]); return; }
    let n = Number(code.slice(5)) || 10;
    if (event.shiftKey) n += 10;
    pick(box, '-categories', 'S' + n);
  }, true);  // capture: the page's shortcuts come first
  // Gradio's textbox submits on Shift+Enter's keypress (and cancels the new line): in the
  // message box the browser's own new line goes in instead.
  document.addEventListener('keypress', (event) => {
    const inText = event.target.closest && event.target.closest('#gl-text');
    if (inText && event.key === 'Enter' && event.shiftKey) event.stopPropagation();
  }, true);
  // The next item comes into view with its label form, and the form takes the focus.
  let lastItem = null;
  new MutationObserver(() => {
    const item = document.querySelector('#gl-queue-item');
    if (!item || !shown(item) || item.textContent === lastItem) return;
    lastItem = item.textContent;
    document.querySelector('#gl-queue').scrollIntoView({block: 'start'});
    const radio = document.querySelector('#gl-queue-label input');
    if (radio) radio.focus({preventScroll: true});
  }).observe(document.documentElement, {subtree: true, childList: true, characterData: true});
})();
</script>"""
