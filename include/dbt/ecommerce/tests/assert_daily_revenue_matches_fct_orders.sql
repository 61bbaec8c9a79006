{#- The marts agree: every date's row in fct_daily_revenue equals the sums over the counted orders
    of fct_orders with that order_date, and no date is missing or extra. Returns disagreeing dates. -#}
with from_orders as (
    select
        order_date,
        count(*) as order_count,
        {{ sum_money('gross_amount') }} as gross_amount,
        {{ sum_money('discount_amount') }} as discount_amount,
        {{ sum_money('net_amount') }} as net_amount,
        {{ sum_money('amount_paid') }} as amount_paid
    from {{ ref('fct_orders') }}
    where {{ is_counted_order('status') }}
    group by order_date
)

select
    coalesce(daily.order_date, from_orders.order_date) as order_date,
    daily.order_count as daily_order_count,
    from_orders.order_count as orders_order_count,
    daily.amount_paid as daily_amount_paid,
    from_orders.amount_paid as orders_amount_paid
from {{ ref('fct_daily_revenue') }} as daily
full outer join from_orders on daily.order_date = from_orders.order_date
where
    daily.order_date is null
    or from_orders.order_date is null
    or {{ rows_differ(
        ['order_count', 'gross_amount', 'discount_amount', 'net_amount', 'amount_paid'], 'daily', 'from_orders'
    ) }}
