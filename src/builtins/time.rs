//! Time (spec 6.11): zone helpers shared by literals and the library.

use crate::eval::print::write_time;
use crate::ext::{Args, Registry, Value};

/// The local UTC offset (seconds) in effect at a local civil time given as seconds
/// since the epoch as if it were UTC (D8: the offset in effect at that instant).
pub fn local_offset_for_civil(civil_secs: i64) -> Option<i32> {
    use jiff::civil::DateTime;
    use jiff::tz::TimeZone;
    let days = civil_secs.div_euclid(86_400);
    let sod = civil_secs.rem_euclid(86_400);
    let (y, m, d) = crate::eval::print::civil_from_days(days);
    let dt = DateTime::new(
        i16::try_from(y).ok()?,
        m as i8,
        d as i8,
        (sod / 3600) as i8,
        (sod / 60 % 60) as i8,
        (sod % 60) as i8,
        0,
    )
    .ok()?;
    let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
    let zoned = tz.to_ambiguous_zoned(dt).compatible().ok()?;
    Some(zoned.offset().seconds())
}

/// The local UTC offset (seconds) at an instant.
pub fn local_offset_at(secs: i64) -> i32 {
    use jiff::tz::TimeZone;
    let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
    match jiff::Timestamp::from_second(secs) {
        Ok(ts) => tz.to_offset(ts).seconds(),
        Err(_) => 0,
    }
}

pub fn register(r: &Registry) {
    r.namespace("time").define_method("string", |_cx, vals| {
        let a = Args::method("string", vals);
        a.arity(1, 1)?;
        let Value::Time(t) = a.value(0)? else {
            return Err(a.error(0, "time required"));
        };
        let mut out = Vec::new();
        write_time(&mut out, t, None);
        Ok(Value::bytes(&out))
    });
}
