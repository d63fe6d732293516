//! What one stack frame contributes to a fingerprint, by platform, and which frames are the
//! application's. A frame contributes the parts listed below that survive their rules; a frame
//! with no part left contributes nothing.
//!
//! | platform | parts |
//! |---|---|
//! | python | module (else file name), function, context line |
//! | javascript, node | module (else file name), function (last `.` segment), context line |
//! | java (Kotlin, Android, Scala, Clojure) | module with generated names replaced, else file name; function |
//! | go | module (package), else file name; function |
//! | ruby, php | module (else file name), function, context line |
//! | csharp | module (else file name); the full signature (`raw_function`), else function |
//! | native (c, cocoa, objc, swift, native) | function (parameters, return type and hashes trimmed, templates as `<T>`), else symbol, else the image and the address relative to it |
//!
//! Rules, with examples:
//! - File names count by their base name, lower case (`/srv/app/Views.py` → `views.py`); not
//!   when the file is a URL (`https://cdn.example.com/app.min.js`), `<anonymous>` or
//!   `[native code]`, nor when a module is present.
//! - Java: `com.example.Foo$$EnhancerByCGLIB$$a1b2c3` → `com.example.Foo$$EnhancerByCGLIB$$<auto>`;
//!   likewise javassist, Hibernate proxies, generated accessors and Clojure's `$fn__123`; a
//!   `$$Lambda$` module and `lambda$…` functions do not count.
//! - JavaScript: `Object.handleClick` → `handleClick`; anonymous functions (`?`,
//!   `<anonymous>`, `Anonymous function`, names ending in `/<`) do not count; frames of `eval`
//!   or `[native code]` do not count at all; the context line of a frame without function in a
//!   URL file does not count.
//! - A context line (where the platform uses one) counts with its whitespace collapsed, and not
//!   when it is longer than 120 characters (minified code).
//! - Ruby: `block in process` → `block`; ERB's `__1234_5678` suffix is cut.
//! - PHP: `class@anonymous/app/Foo.php:12$0::run` → `run`.
//! - Native: `void std::vector<int>::push_back(int const&)` → `std::vector<T>::push_back`,
//!   `core::panicking::panic::h1a2b3c4d5e6f7a8b` → `core::panicking::panic`; `<unknown>` and
//!   `<redacted>` do not
//!   count; a frame with neither function nor symbol counts as `libfoo.so+0x1a2b` when its
//!   image is known, so unsymbolicated crashes split by where they crashed.
//! - A frame repeating the previous one (recursion) counts once.
//! - A frame is the application's when the SDK says so (`in_app: true`) unless it lives in a
//!   dependency directory (`site-packages`, `dist-packages`, `node_modules`, `vendor`,
//!   `go/pkg/mod`) or a runtime or framework package (`java.`, `javax.`, `jdk.`, `sun.`,
//!   `kotlin.`, `kotlinx.`, `scala.`, `org.springframework.`, `org.apache.`, `io.netty.`);
//!   Sentry SDK frames (`io.sentry.`, `sentry_sdk`, `@sentry/`) never count.

use fancy_regex::Regex;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::LazyLock;

const CONTEXT_LINE_PLATFORMS: &[&str] = &["javascript", "node", "python", "php", "ruby"];
const NATIVE: &[&str] = &["objc", "cocoa", "swift", "native", "c"];
const JS: &[&str] = &["javascript", "node"];
const MAX_CONTEXT_LINE: usize = 120;

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    text(v.get(key))
}

/// The keys of a frame the rules read (`data` only for `data.sourcemap`); the rest of a frame
/// does not change its event's issue. [`Frame::of`] reads the same keys.
pub const FIELDS: &[&str] = &[
    "abs_path",
    "colno",
    "context_line",
    "data",
    "filename",
    "function",
    "image_addr",
    "in_app",
    "instruction_addr",
    "lineno",
    "module",
    "package",
    "platform",
    "raw_function",
    "symbol",
];

/// A frame's [`FIELDS`], found in one pass over the frame object: a stack's rules read each
/// frame's keys many times (its parts, whether it is the application's, whether it repeats the
/// previous frame).
#[derive(Default)]
pub struct Frame<'a> {
    abs_path: Option<&'a Value>,
    colno: Option<&'a Value>,
    context_line: Option<&'a Value>,
    data: Option<&'a Value>,
    filename: Option<&'a Value>,
    function: Option<&'a Value>,
    image_addr: Option<&'a Value>,
    in_app: Option<&'a Value>,
    instruction_addr: Option<&'a Value>,
    lineno: Option<&'a Value>,
    module: Option<&'a Value>,
    package: Option<&'a Value>,
    platform: Option<&'a Value>,
    raw_function: Option<&'a Value>,
    symbol: Option<&'a Value>,
}

impl<'a> Frame<'a> {
    /// The frame object `frame` (anything else has no keys).
    pub fn of(frame: &'a Value) -> Frame<'a> {
        let mut f = Frame::default();
        for (key, value) in frame.as_object().into_iter().flatten() {
            let slot = match key.as_str() {
                "abs_path" => &mut f.abs_path,
                "colno" => &mut f.colno,
                "context_line" => &mut f.context_line,
                "data" => &mut f.data,
                "filename" => &mut f.filename,
                "function" => &mut f.function,
                "image_addr" => &mut f.image_addr,
                "in_app" => &mut f.in_app,
                "instruction_addr" => &mut f.instruction_addr,
                "lineno" => &mut f.lineno,
                "module" => &mut f.module,
                "package" => &mut f.package,
                "platform" => &mut f.platform,
                "raw_function" => &mut f.raw_function,
                "symbol" => &mut f.symbol,
                _ => continue,
            };
            *slot = Some(value);
        }
        f
    }

    /// The frame's platform: its own, else the event's.
    pub fn platform(&self, event_platform: &'a str) -> &'a str {
        text(self.platform).unwrap_or(event_platform)
    }

    /// Whether the frame is the application's (see the module docs).
    pub fn in_app(&self) -> bool {
        self.in_app.and_then(Value::as_bool) == Some(true) && !self.in_dependency()
    }

    /// The path, else the file name.
    fn path(&self) -> &'a str {
        text(self.abs_path)
            .or_else(|| text(self.filename))
            .unwrap_or("")
    }

    fn in_dependency(&self) -> bool {
        in_dependency(self.path(), text(self.module).unwrap_or(""))
    }

    fn is_sdk(&self) -> bool {
        let module = text(self.module).unwrap_or("");
        let path = self.path();
        module.starts_with("io.sentry.")
            || module.starts_with("sentry_sdk")
            || path.contains("/sentry_sdk/")
            || path.contains("@sentry/")
    }

    /// `image+0xoffset` for a native frame without a name.
    fn image_address(&self, images: &Images) -> Option<String> {
        let addr = hex_u64(self.instruction_addr)?;
        if let Some((name, offset)) = images.find(addr) {
            return Some(format!("{name}+{offset:#x}"));
        }
        let start = hex_u64(self.image_addr)?;
        let package = text(self.package)?;
        Some(format!(
            "{}+{:#x}",
            basename(package),
            addr.checked_sub(start)?
        ))
    }

    /// Whether two frames are the same call (recursion).
    pub fn same_call(&self, other: &Frame<'_>) -> bool {
        // The address too: nameless native frames at different places are not a recursion.
        self.abs_path == other.abs_path
            && self.package == other.package
            && self.module == other.module
            && self.filename == other.filename
            && self.function == other.function
            && self.lineno == other.lineno
            && self.colno == other.colno
            && self.instruction_addr == other.instruction_addr
    }
}

/// The frame's platform: its own, else the event's.
pub fn platform<'a>(frame: &'a Value, event_platform: &'a str) -> &'a str {
    Frame::of(frame).platform(event_platform)
}

/// Whether the frame is the application's (see the module docs).
pub fn in_app(frame: &Value) -> bool {
    Frame::of(frame).in_app()
}

/// A text field as the rules read it: at most [`MAX_FIELD_CHARS`] characters, not blank.
fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
        .map(cut)
        .filter(|s| !s.trim().is_empty())
}

/// Frames of one stack that count, the innermost ones (the rest of a deeper stack is ignored).
pub const MAX_FRAMES: usize = 1024;

/// Longest text of a frame field that is read, in characters; the rest is ignored.
const MAX_FIELD_CHARS: usize = 1024;

/// The frames of a stack trace object, objects only, at most [`MAX_FRAMES`] (the innermost).
pub fn of(stacktrace: Option<&Value>) -> Vec<&Value> {
    let Some(all) = stacktrace
        .and_then(|s| s.get("frames"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let skip = all.len().saturating_sub(MAX_FRAMES);
    all[skip..].iter().filter(|f| f.is_object()).collect()
}

/// At most [`MAX_FIELD_CHARS`] characters of `s`.
fn cut(s: &str) -> &str {
    super::prefix(s, MAX_FIELD_CHARS)
}

/// Whether a frame at `path` in `module` belongs to a dependency or the runtime.
fn in_dependency(path: &str, module: &str) -> bool {
    let path = if path.contains('\\') {
        Cow::Owned(path.replace('\\', "/"))
    } else {
        Cow::Borrowed(path)
    };
    let dirs = [
        "site-packages/",
        "dist-packages/",
        "node_modules/",
        "/vendor/",
        "go/pkg/mod/",
    ];
    if dirs.iter().any(|d| path.contains(d)) || path.starts_with("vendor/") {
        return true;
    }
    let packages = [
        "java.",
        "javax.",
        "jdk.",
        "sun.",
        "kotlin.",
        "kotlinx.",
        "scala.",
        "org.springframework.",
        "org.apache.",
        "io.netty.",
    ];
    packages.iter().any(|p| module.starts_with(p))
}

fn is_url(path: &str) -> bool {
    ["http:", "https:", "applewebdata:", "blob:"]
        .iter()
        .any(|p| path.starts_with(p))
}

fn basename(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// Java's generated class names (Spring's CGLIB, javassist, Hibernate proxies, reflection
/// accessors, Clojure functions): the generated part becomes `<auto>`.
static JAVA_GENERATED: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"(sun\.reflect\.Generated(?:Serialization)?ConstructorAccessor)\d+",
        r"(\$\$[\w_]+?CGLIB\$\$)[a-fA-F0-9]+(?:_[0-9]+)?",
        r"(\$\$_javassist)(?:_seam)?(?:_[0-9]+)?",
        r"(\$fn__)\d+",
        r"(\$\$?EnhancerBy[\w_]+?\$?\$)[a-fA-F0-9]+(?:_[0-9]+)?",
        r"(\$\$?FastClassBy[\w_]+?\$?\$)[a-fA-F0-9]+(?:_[0-9]+)?",
        r"(\$\$?HibernateProxy\$?\$)\w+(?:_[0-9]+)?",
    ]
    .iter()
    .filter_map(|p| Regex::new(p).ok())
    .collect()
});

/// Java's module with generated names replaced; `None` for a lambda's synthetic class.
fn java_module(module: &str) -> Option<String> {
    if module.contains("$$Lambda$") {
        return None;
    }
    for prefix in [
        "sun.reflect.GeneratedMethodAccessor",
        "jdk.internal.reflect.GeneratedMethodAccessor",
    ] {
        if module.starts_with(prefix) {
            return Some(prefix.to_owned());
        }
    }
    let mut out = module.to_owned();
    for re in JAVA_GENERATED.iter() {
        if let Ok(replaced) = re.try_replacen(&out, 0, "${1}<auto>") {
            out = replaced.into_owned();
        }
    }
    Some(out)
}

/// A native function name as Sentry trims it: parameters removed, template arguments as `<T>`,
/// the return type and qualifiers dropped, a Rust symbol hash cut; namespaces kept.
pub fn trim_native(function: &str) -> String {
    let f = function.trim();
    if f.starts_with('[') || f.starts_with("+[") || f.starts_with("-[") {
        return f.to_owned();
    }
    let mut out = String::new();
    let mut depth_angle = 0usize;
    let mut depth_paren = 0usize;
    for c in f.chars() {
        match c {
            '<' => {
                if depth_angle == 0 && depth_paren == 0 {
                    out.push_str("<T>");
                }
                depth_angle += 1;
            }
            '>' if depth_angle > 0 => depth_angle -= 1,
            '(' => depth_paren += 1,
            ')' if depth_paren > 0 => depth_paren -= 1,
            _ if depth_angle == 0 && depth_paren == 0 => out.push(c),
            _ => {}
        }
    }
    let mut out = out.trim().to_owned();
    for suffix in [" const", "&", " const"] {
        if let Some(s) = out.strip_suffix(suffix) {
            out = s.trim_end().to_owned();
        }
    }
    // A Rust symbol's hash segment (`::h0123456789abcdef`).
    if let Some((head, last)) = out.rsplit_once("::") {
        if last.len() == 17
            && last.starts_with('h')
            && last[1..].chars().all(|c| c.is_ascii_hexdigit())
        {
            out = head.to_owned();
        }
    }
    // The return type goes: the last space-separated token is the name.
    let last = out.rsplit(' ').next().unwrap_or(&out);
    let last = last.split("@@").next().unwrap_or(last);
    if last.is_empty() {
        f.to_owned()
    } else {
        last.to_owned()
    }
}

fn hex_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => {
            u64::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16).ok()
        }
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Debug images read from an event, at most this many.
const MAX_IMAGES: usize = 4096;

/// The event's loaded images (`debug_meta.images`): start, end (exclusive; `u64::MAX` when the
/// size is unknown) and file name, sorted by start; read once per event.
pub struct Images(Vec<(u64, u64, String)>);

impl Images {
    pub fn of(event: &Value) -> Images {
        let mut v: Vec<(u64, u64, String)> = event
            .get("debug_meta")
            .and_then(|d| d.get("images"))
            .and_then(Value::as_array)
            .map(|images| {
                images
                    .iter()
                    .take(MAX_IMAGES)
                    .filter_map(|image| {
                        let start = hex_u64(image.get("image_addr"))?;
                        let size = hex_u64(image.get("image_size")).unwrap_or(0);
                        let end = if size == 0 {
                            u64::MAX
                        } else {
                            start.saturating_add(size)
                        };
                        let name = s(image, "code_file").or_else(|| s(image, "debug_file"))?;
                        Some((start, end, basename(name).to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|(start, _, _)| *start);
        Images(v)
    }

    /// The image holding `addr` and the offset into it.
    fn find(&self, addr: u64) -> Option<(&str, u64)> {
        let at = self.0.partition_point(|(start, _, _)| *start <= addr);
        let (start, end, name) = self.0.get(at.checked_sub(1)?)?;
        (addr < *end).then(|| (name.as_str(), addr - start))
    }
}

/// The parts a frame contributes (`module=…`, `filename=…`, `function=…`, `context=…`, or
/// `address=…`), written after `prefix` and separated by `|`; `None` when it contributes
/// nothing.
pub fn component(
    frame: &Frame<'_>,
    images: &Images,
    event_platform: &str,
    prefix: &str,
) -> Option<String> {
    let platform = frame.platform(event_platform);
    let js = JS.contains(&platform);
    let native = NATIVE.contains(&platform);
    let abs_path = text(frame.abs_path).unwrap_or("");
    if frame.is_sdk() {
        return None;
    }
    let raw_function = text(frame.raw_function);
    let function = text(frame.function);
    // JavaScript frames of eval and native code say nothing about the application.
    if js {
        let last = raw_function
            .or(function)
            .map(|f| f.rsplit('.').next().unwrap_or(f));
        if last == Some("eval")
            || ["[native code]", "native code", "eval code", "<anonymous>"].contains(&abs_path)
        {
            return None;
        }
    }
    let mut out = Parts::new(prefix);

    let mut module = text(frame.module).map(Cow::Borrowed);
    if platform == "java" {
        module = module.and_then(|m| java_module(&m).map(Cow::Owned));
    }
    if platform == "javascript"
        && module
            .as_deref()
            .is_some_and(|m| m.contains('/') && abs_path.ends_with(m))
    {
        module = None;
    }
    match &module {
        Some(m) => out.push("module=", m),
        None => {
            if let Some(f) = text(frame.filename) {
                let name = basename(f).to_lowercase();
                if !is_url(abs_path) && name != "<anonymous>" && name != "[native code]" {
                    out.push("filename=", &name);
                }
            }
        }
    }

    let context = text(frame.context_line)
        .filter(|_| CONTEXT_LINE_PLATFORMS.contains(&platform))
        .filter(|c| c.chars().count() <= MAX_CONTEXT_LINE)
        .filter(|_| {
            !(js && function.is_none() && (is_url(abs_path) || abs_path.starts_with("file:")))
        });

    let name: Option<Cow<'_, str>> = if platform == "csharp" {
        raw_function.or(function).map(Cow::Borrowed)
    } else if native {
        function
            .filter(|f| *f != "<unknown>" && *f != "<redacted>")
            .map(|f| match raw_function {
                Some(_) => Cow::Borrowed(f),
                None => Cow::Owned(trim_native(f)),
            })
            .or_else(|| text(frame.symbol).map(|s| Cow::Owned(trim_native(s))))
    } else {
        function.or(raw_function).map(Cow::Borrowed)
    };
    let name = name.and_then(|f| match platform {
        "javascript" | "node" => {
            let last = match f {
                Cow::Borrowed(f) => Cow::Borrowed(f.rsplit('.').next().unwrap_or(f)),
                Cow::Owned(f) => Cow::Owned(f.rsplit('.').next().unwrap_or(&f).to_owned()),
            };
            let anonymous = [
                "?",
                "<anonymous function>",
                "<anonymous>",
                "Anonymous function",
            ]
            .contains(&last.as_ref())
                || last.ends_with("/<");
            let sourcemapped = frame
                .data
                .and_then(|d| d.get("sourcemap"))
                .is_some_and(|v| !v.is_null())
                && context.is_some();
            (!anonymous && !sourcemapped && !last.is_empty()).then_some(last)
        }
        "java" => (!f.starts_with("lambda$")).then_some(f),
        "ruby" => Some(if f.starts_with("block ") {
            Cow::Borrowed("block")
        } else {
            Cow::Owned(strip_erb_suffix(&f))
        }),
        "php" => {
            if f.starts_with("class@anonymous") {
                f.rsplit("::")
                    .next()
                    .filter(|r| *r != f)
                    .map(|r| Cow::Owned(r.to_owned()))
            } else if f.starts_with("[Anonymous") {
                None
            } else {
                Some(f)
            }
        }
        _ => Some(f),
    });
    match name {
        Some(f) => out.push("function=", &f),
        None if native => {
            if let Some(at) = frame.image_address(images) {
                out.push("address=", &at);
            }
        }
        None => {}
    }
    if let Some(c) = context {
        // Whitespace collapsed: runs become one space, none at either end.
        out.push_words("context=", c);
    }
    out.finish()
}

/// A component being written: a prefix, then parts separated by `|`.
struct Parts {
    text: String,
    prefix_len: usize,
}

impl Parts {
    fn new(prefix: &str) -> Parts {
        let mut text = String::with_capacity(prefix.len() + 64);
        text.push_str(prefix);
        Parts {
            text,
            prefix_len: prefix.len(),
        }
    }

    fn separate(&mut self, label: &str) {
        if self.text.len() > self.prefix_len {
            self.text.push('|');
        }
        self.text.push_str(label);
    }

    fn push(&mut self, label: &str, value: &str) {
        self.separate(label);
        self.text.push_str(value);
    }

    /// `value`'s words, separated by one space.
    fn push_words(&mut self, label: &str, value: &str) {
        self.separate(label);
        for (i, word) in value.split_whitespace().enumerate() {
            if i > 0 {
                self.text.push(' ');
            }
            self.text.push_str(word);
        }
    }

    fn finish(self) -> Option<String> {
        (self.text.len() > self.prefix_len).then_some(self.text)
    }
}

/// `__1234_5678` at the end of an ERB template's method name, cut.
fn strip_erb_suffix(f: &str) -> String {
    if let Some((head, tail)) = f.rsplit_once("__") {
        if let Some((a, b)) = tail.split_once('_') {
            let digits = |x: &str| x.len() >= 4 && x.chars().all(|c| c.is_ascii_digit());
            if digits(a) && digits(b) {
                return head.to_owned();
            }
        }
    }
    f.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The parts of `frame` (none of the tests' values holds a `|`).
    fn parts(frame: &Value, images: &Images, platform: &str) -> Vec<String> {
        component(&Frame::of(frame), images, platform, "")
            .map(|c| c.split('|').map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn p(frame: Value, platform: &str) -> Vec<String> {
        parts(&frame, &Images::of(&json!({})), platform)
    }

    #[test]
    fn per_platform_parts() {
        assert_eq!(
            p(
                json!({"module": "app.views", "filename": "app/views.py", "function": "checkout",
                "context_line": "    raise  ValueError(x)"}),
                "python"
            ),
            [
                "module=app.views",
                "function=checkout",
                "context=raise ValueError(x)"
            ]
        );
        assert_eq!(
            p(
                json!({"filename": "/srv/App/Cart.rb", "function": "block in process"}),
                "ruby"
            ),
            ["filename=cart.rb", "function=block"]
        );
        assert_eq!(
            p(
                json!({"module": "com.example.Foo$$EnhancerBySpringCGLIB$$a1b2c3", "function": "run"}),
                "java"
            ),
            [
                "module=com.example.Foo$$EnhancerBySpringCGLIB$$<auto>",
                "function=run"
            ]
        );
        assert_eq!(
            p(
                json!({"module": "com.example.Foo$$Lambda$12/0x1234", "filename": "Foo.java", "function": "lambda$main$0"}),
                "java"
            ),
            ["filename=foo.java"]
        );
        assert_eq!(
            p(
                json!({"abs_path": "https://cdn.example.com/app.min.js", "filename": "app.min.js",
                "function": "Object.handleClick"}),
                "javascript"
            ),
            ["function=handleClick"]
        );
        assert!(p(
            json!({"abs_path": "[native code]", "function": "forEach"}),
            "javascript"
        )
        .is_empty());
        assert!(p(json!({"function": "eval"}), "javascript").is_empty());
        assert_eq!(
            p(
                json!({"function": "class@anonymous/app/Foo.php:12$0::run", "filename": "Foo.php"}),
                "php"
            ),
            ["filename=foo.php", "function=run"]
        );
        assert_eq!(
            p(
                json!({"function": "std::vector<int>::push_back(int const&)"}),
                "native"
            ),
            ["function=std::vector<T>::push_back"]
        );
        assert_eq!(
            p(
                json!({"function": "core::panicking::panic::h1a2b3c4d5e6f7a8b"}),
                "native"
            ),
            ["function=core::panicking::panic"]
        );
        assert_eq!(
            p(
                json!({"raw_function": "Void Run(System.String)", "function": "Run"}),
                "csharp"
            ),
            ["function=Void Run(System.String)"]
        );
        assert!(p(
            json!({"module": "io.sentry.SentryClient", "function": "capture"}),
            "java"
        )
        .is_empty());
    }

    #[test]
    fn native_frames_without_names_count_by_image_and_offset() {
        let event = json!({"debug_meta": {"images": [
            {"code_file": "/usr/lib/libcrash.so", "image_addr": "0x1000", "image_size": 4096}]}});
        let images = Images::of(&event);
        let frame = json!({"instruction_addr": "0x1a2b", "function": "<unknown>"});
        assert_eq!(
            parts(&frame, &images, "native"),
            ["address=libcrash.so+0xa2b"]
        );
        let elsewhere = json!({"instruction_addr": "0x9000"});
        assert!(parts(&elsewhere, &images, "native").is_empty());
        let before = json!({"instruction_addr": "0x10"});
        assert!(parts(&before, &images, "native").is_empty());
    }

    #[test]
    fn dependencies_are_not_the_application() {
        assert!(in_app(
            &json!({"in_app": true, "abs_path": "/app/views.py"})
        ));
        assert!(!in_app(
            &json!({"in_app": true, "abs_path": "/venv/lib/site-packages/x.py"})
        ));
        assert!(!in_app(
            &json!({"in_app": true, "module": "org.springframework.web.X"})
        ));
        assert!(!in_app(&json!({"abs_path": "/app/views.py"})));
    }
}
