// A section's status line and its hint: what happened, and for an error what to do next.
// Shared by the install section (update.js) and the EnOS panel (enos.js).

/** Binds a status element, a hint element and the section's hints (by error code). */
export function statusLine(status, hint, hints) {
  const set = (text, kind = "") => {
    status.textContent = text;
    status.dataset.state = kind;
  };
  const setHint = (code) => {
    const text = hints[code];
    hint.hidden = !text;
    hint.textContent = text ?? "";
  };
  /** An `OtawebError` (or anything thrown): its message and code, and the hint for it. */
  const error = (e) => {
    const code = e?.code ?? "internal";
    set(`✗ ${e?.message ?? String(e)} (${code})`, "fail");
    setHint(code);
  };
  return { set, setHint, error };
}
