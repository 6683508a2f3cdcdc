package fi.toisio.spark;

import java.time.LocalDate;

import org.apache.spark.sql.api.java.UDF1;

/**
 * The fast path for dates written {@code d.M.yyyy} (Kela's): the day since 1970-01-01 of a date of that shape
 * with a four-digit year from 1000, or null for anything else, including an impossible date.
 *
 * <p>Only the plain shape is taken here: one or two digits, a dot, one or two digits, a dot, four digits,
 * nothing more.  The caller gives every other value, and every null from here, to Spark's own parser of the
 * pattern ({@code try_to_date(value, 'd.M.yyyy')}), so the result is that parser's on every value; on the
 * plain shape the two agree (tested), and this is several times cheaper a row.
 */
public final class DottedDate implements UDF1<String, Integer> {
    private static final long serialVersionUID = 1L;

    @Override
    public Integer call(String s) {
        if (s == null) {
            return null;
        }
        int n = s.length();
        int firstDot = s.indexOf('.');
        if (firstDot < 1 || firstDot > 2) {
            return null;
        }
        int secondDot = s.indexOf('.', firstDot + 1);
        if (secondDot - firstDot < 2 || secondDot - firstDot > 3 || n - secondDot != 5) {
            return null;
        }
        int day = Fields.digits(s, 0, firstDot);
        int month = Fields.digits(s, firstDot + 1, secondDot);
        int year = Fields.digits(s, secondDot + 1, n);
        if (day < 1 || month < 1 || month > 12 || year < 1000) {
            return null;
        }
        if (day > Fields.daysInMonth(year, month)) {
            return null;
        }
        return (int) LocalDate.of(year, month, day).toEpochDay();
    }
}
