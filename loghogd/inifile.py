"""Reading INI files strictly: every mistake named with file, line, section and key.

configparser does not remember where a value came from, so we keep our own index of
section and key lines.  Typos are errors: unknown sections and keys, duplicate keys.
"""

import configparser
import re

_SECTION_RE = re.compile(r'^\[(?P<name>[^\]]*)\]')
_KEY_RE = re.compile(r'^(?P<key>[^=:\s][^=:]*?)\s*[=:]')


class Setting:
    """One configuration key, declared once: name, converter, default and help.

    ``default`` is a raw string (converted like a value read from a file) or None for
    "required".  The declaration builds the defaults, the checks and the docs.
    """

    def __init__(self, name, convert, default, help):
        self.name = name
        self.convert = convert
        self.default = default
        self.help = help

    @property
    def is_required(self):
        return self.default is None


class IniFile:
    """A parsed INI file: its sections, raw values and the line of each.

    ``errors`` collects every problem found while reading; ``read`` never raises for a
    problem in the file's content, so that all of them can be reported in one pass.
    """

    def __init__(self, path):
        self.path = path
        self.errors = []
        self.parser = configparser.ConfigParser(
            interpolation=None, strict=True, default_section='\x00none',
            inline_comment_prefixes=(';', '#'), empty_lines_in_values=False)
        self.parser.optionxform = str  # keys are case-sensitive, like the docs write them
        self.section_lines = {}
        self.key_lines = {}

    def read(self, data=None):
        """Read and parse the file (or ``data``, its bytes as read before); record OS and
        syntax errors in ``errors``."""
        try:
            if data is not None:
                content = data.decode('utf-8')
            else:
                with open(self.path, encoding='utf-8') as stream:
                    content = stream.read()
        except OSError as exc:
            self.errors.append('%s: cannot read: %s' % (self.path, exc.strerror or exc))
            return self
        except UnicodeDecodeError as exc:
            self.errors.append('%s: not valid UTF-8 (%s)' % (self.path, exc.reason))
            return self
        self._index_lines(content)
        try:
            self.parser.read_string(content, source=self.path)
        except configparser.DuplicateSectionError as exc:
            self.errors.append('%s:%s: section [%s] appears twice' % (self.path, exc.lineno, exc.section))
        except configparser.DuplicateOptionError as exc:
            self.errors.append('%s:%s: [%s] %s: key appears twice in the section'
                               % (self.path, exc.lineno, exc.section, exc.option))
        except configparser.MissingSectionHeaderError as exc:
            self.errors.append('%s:%s: a setting before any [section]: %s'
                               % (self.path, exc.lineno, exc.line.strip()))
        except configparser.ParsingError as exc:
            for lineno, line in exc.errors:
                self.errors.append('%s:%s: cannot parse this line: %s' % (self.path, lineno, line.strip()))
        return self

    def _index_lines(self, content):
        section = None
        for number, line in enumerate(content.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped[0] in '#;' or line[:1].isspace():
                continue
            match = _SECTION_RE.match(stripped)
            if match:
                section = match.group('name')
                self.section_lines.setdefault(section, number)
                continue
            match = _KEY_RE.match(stripped)
            if match and section is not None:
                self.key_lines.setdefault((section, match.group('key').strip()), number)

    def close(self):
        """Free what the parser holds (the values stay readable no more).

        configparser's section proxies refer to themselves (their ``get*`` converters are
        partials of their own methods) and to the parser: cycles that only Python's
        cyclic garbage collector frees, 260,000 objects for 20,000 sections, and its
        collections hold every thread for up to 0.4 s (issue 15: a reload on a thread).
        Emptying the objects' attributes breaks the cycles, so reference counting frees
        them at once."""
        parser, self.parser = self.parser, None
        for proxy in list(parser.values()):
            vars(proxy).clear()
        vars(parser).clear()

    def where(self, section, key=None):
        """Return 'file:line: [section] key' (as much of it as is known)."""
        line = self.key_lines.get((section, key)) if key else None
        if line is None:
            line = self.section_lines.get(section)
        location = '%s:%s' % (self.path, line) if line else self.path
        return '%s: [%s]%s' % (location, section, ' ' + key if key else '')

    def sections(self):
        return self.parser.sections()

    def error(self, section, key, message):
        self.errors.append('%s: %s' % (self.where(section, key), message))

    def convert_section(self, section, settings):
        """Convert the section's values with ``settings`` (a dict of Setting by name).

        Returns {name: value} holding every declared setting that is given or has a
        default, and also the keys' raw presence in ``given``.  Unknown keys, missing
        required keys and values that don't convert are recorded in ``errors``.
        """
        values, given = {}, set()
        raw = self.parser[section] if self.parser.has_section(section) else {}
        for key in raw:
            if key not in settings:
                known = ', '.join(sorted(settings))
                self.error(section, key, 'unknown key (known keys: %s)' % known)
        for name, setting in settings.items():
            if name in raw:
                given.add(name)
                text = raw[name]
            elif setting.is_required:
                self.error(section, None, 'required key "%s" is missing' % name)
                continue
            else:
                text = setting.default
            try:
                values[name] = setting.convert(text)
            except ValueError as exc:
                self.error(section, name, str(exc))
        return values, given
