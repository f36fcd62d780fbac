//! The terminal bar graph `graph_bar` (spec 6.15, D65, 6.16).
//!
//! Layout on a terminal of `rows` x `cols`: the title centred on row 1; chart rows
//! 2 ..= rows - 2 (height `rows - 3`), one column per value for the newest
//! `cols - 6` values (older ones scroll off the left); a y-axis (`|`) in the next
//! column with the integer maximum at the top and `0` at the bottom. Bars are drawn
//! in reverse video, scaled to the largest visible value (at least 1); negative values
//! are drawn as 0. At the end of input the cursor is moved below the chart and shown.
//!
//! The terminal size is re-read (one `ioctl`) before each redraw instead of handling
//! SIGWINCH: a changed size resets the chart (clear, keep the newest values that fit,
//! redraw). The runtime's SIGINT/SIGTERM handling (D66) must call
//! [`restore_terminal`] so that an interrupted chart leaves the cursor visible.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use unicode_width::UnicodeWidthChar;

use crate::eval::print::inspect_plain;
use crate::ext::{Args, Registry, Role, RuntimeError, Stage, StageContext, Stream, Value};

/// A chart is on screen (its cursor hidden): [`restore_terminal`] has work to do.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Screen row just below the active chart (where the cursor goes when restoring).
static BELOW_ROW: AtomicUsize = AtomicUsize::new(1);

const HIDE_CURSOR: &[u8] = b"\x1b[?25l";
const SHOW_CURSOR: &[u8] = b"\x1b[?25h";
const CLEAR_SCREEN: &[u8] = b"\x1b[2J";
const REVERSE: &[u8] = b"\x1b[7m";
const NORMAL: &[u8] = b"\x1b[0m";
/// Columns to the right of the bars: the axis and its labels.
const AXIS_COLS: usize = 6;
const LABEL_COLS: usize = AXIS_COLS - 1;

/// Restores the terminal if a graph is being drawn: normal attributes, cursor below the
/// chart and visible. Meant for the runtime's signal handling (6.16, D66): call it after
/// flushing standard output, before exiting. Writes straight to descriptor 1 without
/// allocating or locking, so it may be called from a signal-handling context.
pub fn restore_terminal() {
    if !ACTIVE.swap(false, Ordering::AcqRel) {
        return;
    }
    let mut buf = [0u8; 48];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if len < buf.len() {
                buf[len] = b;
                len += 1;
            }
        }
    };
    put(NORMAL);
    put(b"\x1b[");
    let mut digits = [0u8; 20];
    let mut n = BELOW_ROW.load(Ordering::Acquire).max(1);
    let mut k = digits.len();
    while n > 0 {
        k -= 1;
        digits[k] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    put(&digits[k..]);
    put(b";1H");
    put(SHOW_CURSOR);
    // SAFETY: writing an initialised buffer to a descriptor; errors are ignored.
    unsafe {
        libc::write(1, buf.as_ptr().cast(), len);
    }
}

/// The terminal size (rows, columns) of standard output.
fn terminal_size() -> Option<(usize, usize)> {
    // SAFETY: TIOCGWINSZ fills a `winsize`; a zeroed one is a valid initial value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    if r == -1 || ws.ws_row == 0 || ws.ws_col == 0 {
        None
    } else {
        Some((ws.ws_row as usize, ws.ws_col as usize))
    }
}

fn move_to(out: &mut Vec<u8>, row: usize, col: usize) {
    out.extend_from_slice(b"\x1b[");
    out.extend_from_slice(itoa::Buffer::new().format(row).as_bytes());
    out.push(b';');
    out.extend_from_slice(itoa::Buffer::new().format(col).as_bytes());
    out.push(b'H');
}

struct GraphBar {
    title: String,
    /// Terminal size the chart was laid out for; `None` before the first value.
    size: Option<(usize, usize)>,
    data: VecDeque<f64>,
    /// Scale of the bars currently on screen.
    max: f64,
    heights: Vec<usize>,
    out: Vec<u8>,
}

impl GraphBar {
    fn new(title: String) -> GraphBar {
        GraphBar {
            title,
            size: None,
            data: VecDeque::new(),
            max: 1.0,
            heights: Vec::new(),
            out: Vec::with_capacity(16 * 1024),
        }
    }

    fn layout(&self) -> (usize, usize, usize) {
        let (rows, cols) = self.size.unwrap_or((24, 80));
        let width = cols.saturating_sub(AXIS_COLS).max(1);
        let height = rows.saturating_sub(3).max(1);
        (width, height, cols)
    }

    fn bar_height(&self, v: f64, height: usize) -> usize {
        let k = (v / self.max * height as f64).round();
        if k.is_nan() || k <= 0.0 {
            0
        } else {
            (k as usize).min(height)
        }
    }

    fn draw_title(&mut self, cols: usize) {
        let mut w = 0;
        let mut end = 0;
        for (i, c) in self.title.char_indices() {
            let cw = c.width().unwrap_or(0);
            if w + cw > cols {
                break;
            }
            w += cw;
            end = i + c.len_utf8();
        }
        move_to(&mut self.out, 1, (cols - w) / 2 + 1);
        self.out.extend_from_slice(&self.title.as_bytes()[..end]);
    }

    /// Redraws every chart row, the axis and its labels.
    fn draw_chart(&mut self) {
        let (width, height, _) = self.layout();
        self.heights.clear();
        for i in 0..self.data.len() {
            let h = self.bar_height(self.data[i], height);
            self.heights.push(h);
        }
        let mut label = itoa::Buffer::new();
        let max_label = label.format(self.max.trunc() as i64).as_bytes();
        for r in 0..height {
            move_to(&mut self.out, r + 2, 1);
            // A bar of height k covers chart row r (0 = top) when k >= height - r.
            let threshold = height - r;
            let mut reversed = false;
            for j in 0..width {
                let on = self.heights.get(j).is_some_and(|&k| k >= threshold);
                if on != reversed {
                    self.out
                        .extend_from_slice(if on { REVERSE } else { NORMAL });
                    reversed = on;
                }
                self.out.push(b' ');
            }
            if reversed {
                self.out.extend_from_slice(NORMAL);
            }
            self.out.push(b'|');
            let text: &[u8] = if r == 0 {
                max_label
            } else if r == height - 1 {
                b"0"
            } else {
                b""
            };
            let text = &text[..text.len().min(LABEL_COLS)];
            self.out.extend_from_slice(text);
            self.out
                .extend(std::iter::repeat_n(b' ', LABEL_COLS - text.len()));
        }
    }

    /// Draws only the newest column (nothing scrolled, same scale).
    fn draw_last_column(&mut self) {
        let (_, height, _) = self.layout();
        let j = self.data.len() - 1;
        let k = self.bar_height(self.data[j], height);
        for r in 0..height {
            move_to(&mut self.out, r + 2, j + 1);
            if k >= height - r {
                self.out.extend_from_slice(REVERSE);
                self.out.push(b' ');
                self.out.extend_from_slice(NORMAL);
            } else {
                self.out.push(b' ');
            }
        }
    }

    fn visible_max(&self) -> f64 {
        self.data.iter().copied().fold(1.0, f64::max)
    }

    fn write(&mut self, cx: &StageContext) {
        let out = &cx.globals().out;
        out.write_raw(&self.out);
        out.flush();
        self.out.clear();
    }
}

impl Stage for GraphBar {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let x = match v {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            _ => {
                return Err(RuntimeError::new(format!(
                    "graph_bar: invalid data (value: {})",
                    inspect_plain(&v)
                )))
            }
        };
        // Negative (and NaN) values are drawn as 0.
        let x = if x > 0.0 { x } else { 0.0 };
        let size = terminal_size().or(self.size).or(Some((24, 80)));
        let reset = self.size != size;
        self.size = size;
        let (width, height, cols) = self.layout();
        let mut scrolled = false;
        while self.data.len() >= width {
            self.data.pop_front();
            scrolled = true;
        }
        self.data.push_back(x);
        let max = self.visible_max();
        let rescaled = max != self.max;
        self.max = max;
        if reset {
            ACTIVE.store(true, Ordering::Release);
            BELOW_ROW.store(height + 2, Ordering::Release);
            self.out.extend_from_slice(NORMAL);
            self.out.extend_from_slice(HIDE_CURSOR);
            self.out.extend_from_slice(CLEAR_SCREEN);
            self.draw_title(cols);
            self.draw_chart();
        } else if scrolled || rescaled {
            self.draw_chart();
        } else {
            self.draw_last_column();
        }
        self.write(cx);
        Ok(())
    }

    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        if self.size.is_none() {
            return Ok(());
        }
        let (_, height, _) = self.layout();
        self.out.extend_from_slice(NORMAL);
        move_to(&mut self.out, height + 2, 1);
        self.out.extend_from_slice(SHOW_CURSOR);
        self.write(cx);
        ACTIVE.store(false, Ordering::Release);
        Ok(())
    }
}

pub fn register(r: &Registry) {
    r.define_stage_fn("graph_bar", |_cx, vals| {
        let a = Args::new("graph_bar", vals);
        a.arity(0, 1)?;
        let title = match vals.first() {
            None => String::new(),
            Some(_) => a.str(0)?.to_str_lossy().into_owned(),
        };
        if !std::io::stdout().is_terminal() {
            return Err(RuntimeError::new(
                "graph_bar: standard output is not a terminal",
            ));
        }
        Ok(Stream::value(Role::Consumer, GraphBar::new(title)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_layout() {
        let mut g = GraphBar::new("t".into());
        g.size = Some((6, 10)); // width 4, height 3
        g.data.extend([0.0, 1.0, 2.0, 3.0]);
        g.max = g.visible_max();
        g.draw_chart();
        let s = String::from_utf8(g.out.clone()).unwrap();
        let rows: Vec<&str> = s.split("\x1b[").collect();
        assert!(s.starts_with("\x1b[2;1H"));
        assert!(s.contains("|3    "));
        assert!(s.contains("|0    "));
        // Top row: only the last bar (3 of 3) is tall enough.
        assert!(s.contains("2;1H   \x1b[7m \x1b[0m|3"), "{rows:?}");
        // Bottom row: bars of height >= 1.
        assert!(s.contains("4;1H \x1b[7m   \x1b[0m|0"), "{rows:?}");
    }
}
