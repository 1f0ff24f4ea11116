// A section's status line and its hint: what happened, and for an error what to do next.
// Shared by the checker (app.js), the install section (update.js) and the EnOS panel (enos.js).

// What to do next when an image or manifest fails its checks, wherever it is checked: in the
// checker, in daemon mode, or for an EnOS download.
export const CHECK_HINTS = {
  "size-mismatch": "The file is not the image the manifest describes: download it again, or pick the manifest that belongs to it.",
  "digest-mismatch": "The file is damaged or not the image the manifest describes: download it again, or pick the manifest that belongs to it.",
  "md5-mismatch": "The file is damaged or not the image the manifest describes: download it again, or pick the manifest that belongs to it.",
  "signature-invalid": "Do not install this image: its signature does not match the trusted key. Check that the manifest comes from the vendor.",
  "signature-missing": "The manifest entry is not signed. Ask the vendor for a signed manifest.",
  "no-trusted-key": "Tick “Use the demo test key” or paste the vendor's public key.",
  "key-invalid": "Paste the public key as PEM, starting with -----BEGIN PUBLIC KEY-----.",
  "manifest-invalid": "Check the manifest text: it must be an otaweb manifest or one entry of it.",
  "insecure-url": "The firmware must come over HTTPS (plain http:// only from this computer). Use the https:// address.",
  "policy-invalid": "The update settings are not valid: check the manifest URL, the interval and the trusted key, then try again.",
  "download-failed": "The file could not be downloaded. Check the address and the network, then try again.",
};

// Every code starting with this is one damaged-package case; one hint covers them all.
const BUNDLE_PREFIX = "dfu-bundle-";
const BUNDLE_HINT = "The package file is damaged or not a DFU bundle. Download the package made for this device again.";

// An error no hint names still gets a next step, so a code is never shown alone.
const FALLBACK_HINT = "Try again. If it keeps failing, copy the event log and send it with the message above to support.";

/** The next step for an error code, from a section's hints. */
export function hintFor(hints, code) {
  return hints[code] ?? CHECK_HINTS[code] ?? (code.startsWith(BUNDLE_PREFIX) ? BUNDLE_HINT : FALLBACK_HINT);
}

/** Binds a status element, a hint element and the section's hints (by error code). */
export function statusLine(status, hint, hints) {
  const set = (text, kind = "") => {
    status.textContent = text;
    status.dataset.state = kind;
  };
  const setHint = (text) => {
    hint.hidden = !text;
    hint.textContent = text ?? "";
  };
  /** An `OtawebError` (or anything thrown): its message and code, and what to do next. */
  const error = (e) => {
    const code = e?.code ?? "internal";
    set(`✗ ${e?.message ?? String(e)} (${code})`, "fail");
    setHint(hintFor(hints, code));
  };
  return { set, setHint, error };
}
