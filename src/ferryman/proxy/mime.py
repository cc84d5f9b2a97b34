"""Media types of served files by extension: nginx's `types` and the stock mime.types.

Owns the built-in table (the mime.types file nginx ships, so a native config serves
files with the types an nginx user expects) and the lookup nginx's
ngx_http_set_content_type makes: the extension after the last "." of the last path
segment, lower-cased; unknown or none: `default_type`. Pure; knows nothing about files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["BUILTIN_TYPES", "NGINX_DEFAULT_TYPES", "content_type", "type_table"]

# nginx's mime.types (1.22), as (media type, extensions) in its order.
_MIME_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("text/html", ("html", "htm", "shtml")),
    ("text/css", ("css",)),
    ("text/xml", ("xml",)),
    ("image/gif", ("gif",)),
    ("image/jpeg", ("jpeg", "jpg")),
    ("application/javascript", ("js",)),
    ("application/atom+xml", ("atom",)),
    ("application/rss+xml", ("rss",)),
    ("text/mathml", ("mml",)),
    ("text/plain", ("txt",)),
    ("text/vnd.sun.j2me.app-descriptor", ("jad",)),
    ("text/vnd.wap.wml", ("wml",)),
    ("text/x-component", ("htc",)),
    ("image/avif", ("avif",)),
    ("image/png", ("png",)),
    ("image/svg+xml", ("svg", "svgz")),
    ("image/tiff", ("tif", "tiff")),
    ("image/vnd.wap.wbmp", ("wbmp",)),
    ("image/webp", ("webp",)),
    ("image/x-icon", ("ico",)),
    ("image/x-jng", ("jng",)),
    ("image/x-ms-bmp", ("bmp",)),
    ("font/woff", ("woff",)),
    ("font/woff2", ("woff2",)),
    ("application/java-archive", ("jar", "war", "ear")),
    ("application/json", ("json",)),
    ("application/mac-binhex40", ("hqx",)),
    ("application/msword", ("doc",)),
    ("application/pdf", ("pdf",)),
    ("application/postscript", ("ps", "eps", "ai")),
    ("application/rtf", ("rtf",)),
    ("application/vnd.apple.mpegurl", ("m3u8",)),
    ("application/vnd.google-earth.kml+xml", ("kml",)),
    ("application/vnd.google-earth.kmz", ("kmz",)),
    ("application/vnd.ms-excel", ("xls",)),
    ("application/vnd.ms-fontobject", ("eot",)),
    ("application/vnd.ms-powerpoint", ("ppt",)),
    ("application/vnd.oasis.opendocument.graphics", ("odg",)),
    ("application/vnd.oasis.opendocument.presentation", ("odp",)),
    ("application/vnd.oasis.opendocument.spreadsheet", ("ods",)),
    ("application/vnd.oasis.opendocument.text", ("odt",)),
    ("application/vnd.openxmlformats-officedocument.presentationml.presentation", ("pptx",)),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ("xlsx",)),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", ("docx",)),
    ("application/vnd.wap.wmlc", ("wmlc",)),
    ("application/wasm", ("wasm",)),
    ("application/x-7z-compressed", ("7z",)),
    ("application/x-cocoa", ("cco",)),
    ("application/x-java-archive-diff", ("jardiff",)),
    ("application/x-java-jnlp-file", ("jnlp",)),
    ("application/x-makeself", ("run",)),
    ("application/x-perl", ("pl", "pm")),
    ("application/x-pilot", ("prc", "pdb")),
    ("application/x-rar-compressed", ("rar",)),
    ("application/x-redhat-package-manager", ("rpm",)),
    ("application/x-sea", ("sea",)),
    ("application/x-shockwave-flash", ("swf",)),
    ("application/x-stuffit", ("sit",)),
    ("application/x-tcl", ("tcl", "tk")),
    ("application/x-x509-ca-cert", ("der", "pem", "crt")),
    ("application/x-xpinstall", ("xpi",)),
    ("application/xhtml+xml", ("xhtml",)),
    ("application/xspf+xml", ("xspf",)),
    ("application/zip", ("zip",)),
    ("application/octet-stream", ("bin", "exe", "dll")),
    ("application/octet-stream", ("deb",)),
    ("application/octet-stream", ("dmg",)),
    ("application/octet-stream", ("iso", "img")),
    ("application/octet-stream", ("msi", "msp", "msm")),
    ("audio/midi", ("mid", "midi", "kar")),
    ("audio/mpeg", ("mp3",)),
    ("audio/ogg", ("ogg",)),
    ("audio/x-m4a", ("m4a",)),
    ("audio/x-realaudio", ("ra",)),
    ("video/3gpp", ("3gpp", "3gp")),
    ("video/mp2t", ("ts",)),
    ("video/mp4", ("mp4",)),
    ("video/mpeg", ("mpeg", "mpg")),
    ("video/quicktime", ("mov",)),
    ("video/webm", ("webm",)),
    ("video/x-flv", ("flv",)),
    ("video/x-m4v", ("m4v",)),
    ("video/x-mng", ("mng",)),
    ("video/x-ms-asf", ("asx", "asf")),
    ("video/x-ms-wmv", ("wmv",)),
    ("video/x-msvideo", ("avi",)),
)


def type_table(pairs: Iterable[tuple[str, str]]) -> dict[bytes, bytes]:
    """(extension, type) pairs -> a lookup table; a later extension wins, as in nginx
    (which warns "duplicate extension" and keeps the last)."""
    return {ext.lower().encode(): mtype.encode() for ext, mtype in pairs}


BUILTIN_TYPES: Mapping[bytes, bytes] = type_table(
    (ext, mtype) for mtype, exts in _MIME_TYPES for ext in exts
)
# ngx_http_core_default_types: what nginx uses with no `types` block at all.
NGINX_DEFAULT_TYPES: tuple[tuple[str, str], ...] = (
    ("html", "text/html"),
    ("gif", "image/gif"),
    ("jpg", "image/jpeg"),
)


def content_type(path: bytes, types: Mapping[bytes, bytes], default: bytes) -> bytes:
    """The Content-Type of `path` ($uri or a file name)."""
    name = path[path.rfind(b"/") + 1 :]
    dot = name.rfind(b".")
    if dot < 0:
        return default
    return types.get(name[dot + 1 :].lower(), default)
