/* Fields marked data-select-on-focus (a new API key, shown once) select their whole text when
 * focused, ready to copy. A file of its own: the Content Security Policy refuses inline handlers. */
"use strict";

for (const field of document.querySelectorAll("[data-select-on-focus]")) {
  field.addEventListener("focus", () => field.select());
}
