// The visible texts whose WCAG 2 contrast ratio is too low: under 4.5, or 3 for large text.
// Each text node's colour against the first ancestor background that is mostly opaque;
// disabled controls are exempt (as WCAG says). Run by test_browser.py; returns a list of lines.
const parse = (c) => {
  const m = c.match(/[\d.]+/g).map(Number);
  return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1];
};
const channel = (v) => {
  const x = v / 255;
  return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
};
const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
const background = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const c = parse(getComputedStyle(e).backgroundColor);
    if (c[3] > 0.5) return c;
  }
  return [255, 255, 255, 1];
};
const low = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const el = node.parentElement;
  if (!node.textContent.trim() || !el.checkVisibility()) continue;
  if (el.closest('[disabled], .skip, .sr-only')) continue;
  const style = getComputedStyle(el);
  const [a, b] = [luminance(parse(style.color)), luminance(background(el))].sort((x, y) => y - x);
  const ratio = (a + 0.05) / (b + 0.05);
  const size = parseFloat(style.fontSize);
  const large = size >= 24 || (size >= 18.6 && Number(style.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) low.push(`${node.textContent.trim().slice(0, 30)}: ${ratio.toFixed(2)}`);
}
return low;
