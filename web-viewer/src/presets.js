// Window/level presets for projection radiographs. DX/CR pixel values are not Hounsfield
// units, so the CT presets (bone 300/1500, ...) mean nothing here: each preset is placed
// inside the image's own VOI (its Window Center/Width, or the loader's min/max), where the
// anatomy is. Dense structures are bright in MONOCHROME2 (high values) and have low values
// in MONOCHROME1 (displayed inverted), so the bone and soft-tissue windows swap ends there.

/**
 * @param {string} name default | bone | soft | full
 * @param {{lower:number, upper:number}} original the image's own VOI
 * @param {{lower:number, upper:number}} range the pixel values present
 * @param {boolean} monochrome1
 */
export function presetRange(name, original, range, monochrome1) {
  const width = Math.max(1, original.upper - original.lower);
  // where along the default window the preset is centred (0: the low end), and how wide
  const place = (at, share) => {
    const centre = original.lower + width * (monochrome1 ? 1 - at : at);
    const half = (width * share) / 2;
    return { lower: centre - half, upper: centre + half };
  };
  switch (name) {
    case "bone": // the dense end, narrow: cortex and trabeculae in contrast
      return place(0.65, 0.5);
    case "soft": // the less dense end, wider: soft tissue and effusions
      return place(0.3, 0.7);
    case "full":
      return { lower: range.lower, upper: Math.max(range.lower + 1, range.upper) };
    default:
      return { ...original };
  }
}
