package fi.toisio.spark;

/** What the functions of this package read out of a field: plain decimal digits, and the days of a month. */
final class Fields {
    private static final int[] MONTH_DAYS = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    private Fields() {
    }

    /** The number the characters {@code from} to {@code to} (exclusive) of {@code s} write, or -1 if one is not
     * an ASCII digit. */
    static int digits(String s, int from, int to) {
        int n = 0;
        for (int i = from; i < to; i++) {
            char c = s.charAt(i);
            if (c < '0' || c > '9') {
                return -1;
            }
            n = n * 10 + (c - '0');
        }
        return n;
    }

    /** The number of days in {@code month} (1-12) of {@code year} in the proleptic Gregorian calendar. */
    static int daysInMonth(int year, int month) {
        boolean leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        return MONTH_DAYS[month - 1] + (month == 2 && leap ? 1 : 0);
    }
}
