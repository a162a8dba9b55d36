//! The web client's files, built into the binary: no bundler, no build step, no download.
//! They are plain files beside this one, served as they are by `routes`.

pub const INDEX_HTML: &str = include_str!("web/index.html");
pub const APP_JS: &str = include_str!("web/app.js");
pub const STYLE_CSS: &str = include_str!("web/style.css");
