// Light or dark: the system's prefers-color-scheme until the person picks one with the header's
// toggle; the pick is kept in localStorage (this device) and set as <html data-theme>.
import { useEffect, useState } from "preact/hooks";

export type Theme = "light" | "dark";
const KEY = "drtrain-theme";
const CHANGED = "drtrain-theme";
const media = () => matchMedia("(prefers-color-scheme: dark)");

function picked(): Theme | null {
  const v = localStorage.getItem(KEY);
  return v === "light" || v === "dark" ? v : null;
}

export function currentTheme(): Theme {
  return picked() ?? (media().matches ? "dark" : "light");
}

function apply(): void {
  document.documentElement.dataset.theme = currentTheme();
  dispatchEvent(new Event(CHANGED));
}

/** Sets <html data-theme> now and whenever the system's preference changes. */
export function initTheme(): void {
  apply();
  media().addEventListener("change", apply);
}

export function toggleTheme(): void {
  localStorage.setItem(KEY, currentTheme() === "dark" ? "light" : "dark");
  apply();
}

export function useTheme(): Theme {
  const [theme, setTheme] = useState(currentTheme);
  useEffect(() => {
    const on = () => setTheme(currentTheme());
    addEventListener(CHANGED, on);
    return () => removeEventListener(CHANGED, on);
  }, []);
  return theme;
}

/** A CSS custom property's value now (charts draw on a canvas, which CSS cannot restyle). */
export const cssVar = (name: string) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
