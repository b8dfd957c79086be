// Playing a call's clip. Clip URLs need the token, which an <audio src> cannot send, so the clip
// is fetched with the Authorization header and played from a blob URL.

import { getBlob } from "./api.js";
import { t } from "./i18n.js";

export class ClipPlayer {
  constructor(audio, onError) {
    this.audio = audio;
    this.onError = onError;
    this.objectUrl = null;
    this.button = null;
    this.audio.addEventListener("ended", () => this.#reset());
    this.audio.addEventListener("pause", () => this.#reset());
  }

  #reset() {
    if (this.button) {
      this.button.textContent = "▶";
      this.button.classList.remove("playing");
      this.button.setAttribute("aria-label", t("clip.play"));
    }
    this.button = null;
  }

  /** Play `url` (or stop, when `button` is the one already playing). */
  async toggle(url, button) {
    if (this.button === button && !this.audio.paused) {
      this.audio.pause();
      return;
    }
    if (!this.audio.paused) this.audio.pause();
    button.disabled = true;
    try {
      const blob = await getBlob(url);
      if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
      this.objectUrl = URL.createObjectURL(blob);
      this.audio.src = this.objectUrl;
      await this.audio.play();
      this.button = button;
      button.textContent = "■";
      button.classList.add("playing");
      button.setAttribute("aria-label", t("clip.stop"));
    } catch (err) {
      this.onError(err, t("clip.failed"));
    } finally {
      button.disabled = false;
    }
  }
}

export function clipButton(player, url) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "clip small";
  button.textContent = "▶";
  button.setAttribute("aria-label", t("clip.play"));
  button.title = t("clip.title");
  button.addEventListener("click", (event) => {
    event.stopPropagation();
    player.toggle(url, button);
  });
  return button;
}
